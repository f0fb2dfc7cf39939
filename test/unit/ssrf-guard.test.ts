import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BlockedAddressError,
  GuardedFetchError,
  GuardedFetcher,
  type GuardOptions,
  nonPublicRange,
} from '../../src/inputs/ssrf-guard.js';

describe('nonPublicRange', () => {
  it.each([
    ['127.0.0.1', 'loopback'],
    ['127.1.2.3', 'loopback'],
    ['10.0.0.5', 'private'],
    ['172.16.0.1', 'private'],
    ['192.168.1.1', 'private'],
    ['169.254.169.254', 'linkLocal'],
    ['100.64.0.1', 'carrierGradeNat'],
    ['0.0.0.0', 'unspecified'],
    ['224.0.0.1', 'multicast'],
    ['255.255.255.255', 'broadcast'],
    ['::1', 'loopback'],
    ['::', 'unspecified'],
    ['fe80::1', 'linkLocal'],
    ['fc00::1', 'uniqueLocal'],
    ['fd12:3456::1', 'uniqueLocal'],
    ['ff02::1', 'multicast'],
    // IPv4-mapped IPv6 is judged as the IPv4 address it carries, in either notation.
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:7f00:1', 'loopback'],
    ['::ffff:10.0.0.1', 'private'],
    // Tunnels whose far end is an IPv4 address: refused whatever they embed.
    ['64:ff9b::7f00:1', 'rfc6052'],
    ['2002:7f00:1::1', '6to4'],
    ['2001:0:4136:e378::1', 'teredo'],
    ['not an address', 'invalid'],
  ])('refuses %s (%s)', (address, range) => {
    expect(nonPublicRange(address)).toBe(range);
  });

  it.each(['93.184.216.34', '8.8.8.8', '2606:4700:4700::1111', '::ffff:8.8.8.8'])('accepts %s', (address) => {
    expect(nonPublicRange(address)).toBeUndefined();
  });
});

/** A server on one loopback address that counts its requests and answers with `answer`. */
async function countingServer(
  host: string,
  answer: (path: string) => { status: number; headers?: Record<string, string>; body?: string },
): Promise<{ server: Server; port: number; hits: string[] }> {
  const hits: string[] = [];
  const server = createServer((req, res) => {
    hits.push(req.url ?? '');
    const { status, headers = {}, body = '' } = answer(req.url ?? '');
    res.writeHead(status, headers).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return { server, port: (server.address() as AddressInfo).port, hits };
}

describe('GuardedFetcher', () => {
  // 127.0.0.1 stands for "the public internet" here (the policy allows it); 127.0.0.2 for the private network.
  const allowOnlyFirstLoopback = (address: string) => address === '127.0.0.1';
  let outside: Awaited<ReturnType<typeof countingServer>>;
  let inside: Awaited<ReturnType<typeof countingServer>>;
  const fetchers: GuardedFetcher[] = [];
  const guard = (options: Partial<GuardOptions> = {}) => {
    const fetcher = new GuardedFetcher({
      allowPrivate: false,
      timeoutMs: 2_000,
      maxBytes: 1024,
      maxRedirects: 3,
      allowAddress: allowOnlyFirstLoopback,
      ...options,
    });
    fetchers.push(fetcher);
    return fetcher;
  };

  beforeAll(async () => {
    inside = await countingServer('127.0.0.2', () => ({ status: 200, body: 'internal secrets' }));
    outside = await countingServer('127.0.0.1', (path) => {
      const hop = /^\/hops\/(\d+)$/.exec(path);
      if (hop && Number(hop[1]) < 3)
        return { status: 302, headers: { location: `/hops/${Number(hop[1]) + 1}` } };
      if (path === '/to-inside-literal') {
        return { status: 301, headers: { location: `http://127.0.0.2:${inside.port}/` } };
      }
      if (path === '/to-inside-name') {
        return { status: 307, headers: { location: `http://internal.test:${inside.port}/` } };
      }
      if (path === '/big') return { status: 200, body: 'x'.repeat(5000) };
      return { status: 200, body: 'hello' };
    });
  });
  afterAll(async () => {
    await Promise.all(fetchers.map((fetcher) => fetcher.close()));
    for (const { server } of [outside, inside]) await new Promise((resolve) => server.close(resolve));
  });

  it('fetches an allowed address and reads at most maxBytes', async () => {
    const small = await guard().get(`http://127.0.0.1:${outside.port}/hello`);
    expect(small).toMatchObject({ status: 200, complete: true });
    expect(Buffer.from(small.bytes).toString()).toBe('hello');
    const big = await guard().get(`http://127.0.0.1:${outside.port}/big`);
    expect(big.bytes.byteLength).toBe(1024);
    expect(big.complete).toBe(false);
  });

  it('refuses loopback and IPv4-mapped literals with the default policy, before any connection', async () => {
    const before = outside.hits.length;
    const strict = guard({ allowAddress: undefined });
    for (const url of [
      `http://127.0.0.1:${outside.port}/`,
      `http://[::ffff:127.0.0.1]:${outside.port}/`,
      `http://2130706433:${outside.port}/`,
      `http://[::1]:${outside.port}/`,
    ]) {
      await expect(strict.get(url)).rejects.toBeInstanceOf(BlockedAddressError);
    }
    // A name that resolves to loopback, through the system resolver.
    await expect(strict.get(`http://localhost:${outside.port}/`)).rejects.toThrow(/non-public address/);
    expect(outside.hits.length).toBe(before);
  });

  it('lets everything through when private addresses are allowed', async () => {
    const open = guard({ allowPrivate: true, allowAddress: undefined });
    expect((await open.get(`http://localhost:${outside.port}/hello`)).status).toBe(200);
  });

  it('re-checks every redirect: to a private literal or to a name resolving to one', async () => {
    const resolve = async (hostname: string) => (hostname === 'internal.test' ? ['127.0.0.2'] : []);
    const fetcher = guard({ resolve });
    await expect(fetcher.get(`http://127.0.0.1:${outside.port}/to-inside-literal`)).rejects.toThrow(
      /127\.0\.0\.2/,
    );
    await expect(fetcher.get(`http://127.0.0.1:${outside.port}/to-inside-name`)).rejects.toThrow(
      /internal\.test resolves to a non-public address \(127\.0\.0\.2/,
    );
    expect(inside.hits).toEqual([]);
  });

  it('follows at most maxRedirects redirects', async () => {
    const before = outside.hits.length;
    await expect(guard({ maxRedirects: 2 }).get(`http://127.0.0.1:${outside.port}/hops/0`)).rejects.toThrow(
      'redirects more than 2 times',
    );
    expect(outside.hits.length - before).toBe(3);
    const followed = await guard({ maxRedirects: 2 }).get(`http://127.0.0.1:${outside.port}/hops/1`);
    expect(followed.url).toBe(`http://127.0.0.1:${outside.port}/hops/3`);
  });

  it('connects to the address it checked, however the name resolves next time (DNS rebinding)', async () => {
    // Answers the allowed address once, then the private one: a check that resolved separately from the
    // connection would pass the first answer and connect to the second.
    const answers: string[] = [];
    const resolve = async () => {
      const address = answers.length === 0 ? '127.0.0.1' : '127.0.0.2';
      answers.push(address);
      return [address];
    };
    const before = outside.hits.length;
    const response = await guard({ resolve }).get(`http://rebind.test:${outside.port}/hello`);
    expect(Buffer.from(response.bytes).toString()).toBe('hello');
    expect(answers).toEqual(['127.0.0.1']);
    expect(outside.hits.length - before).toBe(1);
    expect(inside.hits).toEqual([]);

    // The other way round, the private answer is refused even though an earlier one was allowed.
    answers.length = 0;
    answers.push('used');
    await expect(guard({ resolve }).get(`http://rebind.test:${inside.port}/`)).rejects.toBeInstanceOf(
      BlockedAddressError,
    );
    expect(inside.hits).toEqual([]);
  });

  it('refuses other schemes and credentials, and gives up at its deadline', async () => {
    await expect(guard().get('file:///etc/passwd')).rejects.toBeInstanceOf(GuardedFetchError);
    await expect(guard().get(`http://user:pw@127.0.0.1:${outside.port}/`)).rejects.toThrow('credentials');
    const silent = createServer(() => {});
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const started = performance.now();
    await expect(
      guard({ timeoutMs: 300 }).get(`http://127.0.0.1:${(silent.address() as AddressInfo).port}/`),
    ).rejects.toThrow('did not answer in time');
    expect(performance.now() - started).toBeLessThan(2_000);
    silent.closeAllConnections();
    await new Promise((resolve) => silent.close(resolve));
  });
});
