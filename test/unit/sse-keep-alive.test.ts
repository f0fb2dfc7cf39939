import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SseKeepAlive } from '../../src/http/sse-keep-alive.js';

/** A real HTTP server and fetch clients reading the stream: the comments go over TCP. */
describe('SseKeepAlive', () => {
  const INTERVAL_MS = 400;
  let server: Server;
  let keepAlive: SseKeepAlive;
  let url: string;
  const responses: ServerResponse[] = [];
  const aborts: AbortController[] = [];

  beforeEach(async () => {
    keepAlive = new SseKeepAlive(INTERVAL_MS);
    server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.flushHeaders();
      responses.push(res);
      keepAlive.add(res);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterEach(async () => {
    keepAlive.close();
    for (const abort of aborts.splice(0)) abort.abort();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    responses.length = 0;
  });

  /** Opens a stream and collects what arrives, with the time of each chunk. */
  async function open() {
    const abort = new AbortController();
    aborts.push(abort);
    const response = await fetch(url, { signal: abort.signal });
    const chunks: Array<{ text: string; atMs: number }> = [];
    let ended = false;
    void (async () => {
      try {
        for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
          chunks.push({ text: Buffer.from(chunk).toString('utf8'), atMs: performance.now() });
        }
      } catch {
        // aborted
      }
      ended = true;
    })();
    return { chunks, ended: () => ended, startedMs: performance.now() };
  }

  const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  it('sends each open stream a comment about once per interval', async () => {
    const streams = await Promise.all(Array.from({ length: 30 }, () => open()));
    await pause(INTERVAL_MS * 4.5);
    for (const stream of streams) {
      const pings = stream.chunks.filter((chunk) => chunk.text === ':\n\n');
      // Four or five intervals passed (a stalled machine may skip one); the first ping comes within one.
      expect(pings.length).toBeGreaterThanOrEqual(3);
      expect(pings.length).toBeLessThanOrEqual(5);
      expect((pings[0]?.atMs ?? Number.POSITIVE_INFINITY) - stream.startedMs).toBeLessThan(INTERVAL_MS * 1.5);
    }
  });

  it('keeps pinging the other streams after one closes, and ends them all when it is closed', async () => {
    const [leaving, staying] = await Promise.all([open(), open()]);
    (responses[0] as ServerResponse).destroy();
    await expect.poll(() => leaving.ended(), { timeout: 2_000 }).toBe(true);
    await pause(INTERVAL_MS * 2.5);
    expect(staying.chunks.filter((chunk) => chunk.text === ':\n\n').length).toBeGreaterThanOrEqual(2);
    expect(staying.ended()).toBe(false);
    keepAlive.close();
    await expect.poll(() => staying.ended(), { timeout: 2_000 }).toBe(true);
  });
});
