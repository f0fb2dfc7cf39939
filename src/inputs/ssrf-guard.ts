import type { LookupAddress, LookupOptions } from 'node:dns';
import { lookup as systemLookup } from 'node:dns';
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import { Agent, fetch as undiciFetch } from 'undici';

/**
 * Fetches of URLs a user gave (input images and audio) or a callback's body named (result videos: kie's
 * signature does not cover the body), guarded against server-side request forgery: a URL
 * must not make the gateway reach its own network. Every address a hostname resolves to must be public
 * unicast; the connection is made to the very address that was checked (the check runs inside the socket's
 * own lookup), so a DNS server that answers differently the second time cannot swap it; redirects are
 * followed one by one and each hop goes through the same check; the whole exchange has one deadline and the
 * body is read up to a byte cap.
 */

/** Resolves a hostname to every address it has, as `dns.lookup(..., { all: true })` does. */
export type Resolver = (hostname: string) => Promise<string[]>;

export interface GuardOptions {
  /** Development and tests fetch from localhost; production refuses every non-public address. */
  allowPrivate: boolean;
  /** One deadline for the whole exchange: connections, redirects and the bytes read. */
  timeoutMs: number;
  /** At most this many bytes of a body are read. */
  maxBytes: number;
  maxRedirects: number;
  /** The system resolver by default; tests give a rebinding one. */
  resolve?: Resolver;
  /** Which addresses may be reached when private ones are not allowed: public unicast by default. */
  allowAddress?: (address: string) => boolean;
  /**
   * Origins the operator configured (kie's API, say) and so reached wherever they are, a local simulator
   * included. Only the hop to such an origin is exempt: a redirect from it elsewhere is checked as any other.
   */
  trustedOrigins?: readonly string[];
}

/** Why a URL could not be fetched, in words for the person who gave it. */
export class GuardedFetchError extends Error {
  override name = 'GuardedFetchError';
}

/** The address is not one a user's URL may make the gateway reach. */
export class BlockedAddressError extends GuardedFetchError {
  override name = 'BlockedAddressError';
  readonly code = 'ERR_BLOCKED_ADDRESS';
}

export interface GuardedRequest {
  headers?: Record<string, string>;
  /** Fewer bytes than the configured cap. */
  maxBytes?: number;
  /** Ends the exchange early: a deadline shared by several requests. */
  signal?: AbortSignal;
}

/** undici's response, its body not read yet. */
export type OpenedResponse = Awaited<ReturnType<typeof undiciFetch>>;

export interface GuardedResponse {
  status: number;
  headers: Headers;
  /** At most `maxBytes` of the body. */
  bytes: Uint8Array;
  /** The whole body was read (it was no longer than the cap). */
  complete: boolean;
  /** Where the last redirect led. */
  url: string;
}

/**
 * The range an address belongs to when it is not public unicast (`loopback`, `private`, `linkLocal`,
 * `uniqueLocal`, `multicast`, `carrierGradeNat`, `6to4`, ...), or undefined for a public one. IPv4-mapped
 * IPv6 addresses are judged as the IPv4 address they carry. Tunnels that embed an IPv4 address (6to4, Teredo,
 * NAT64) are refused outright, since what they reach depends on a gateway's routing, not on the address.
 */
export function nonPublicRange(address: string): string | undefined {
  if (!ipaddr.isValid(address)) return 'invalid';
  const range = ipaddr.process(address).range();
  return range === 'unicast' ? undefined : range;
}

const systemResolver: Resolver = (hostname) =>
  new Promise((resolve, reject) =>
    systemLookup(hostname, { all: true, verbatim: true }, (error, addresses) =>
      error ? reject(error) : resolve(addresses.map((entry) => entry.address)),
    ),
  );

type LookupCallback = (
  error: NodeJS.ErrnoException | null,
  address: string | LookupAddress[],
  family?: number,
) => void;

/** A `net.connect` lookup that resolves once and hands the socket only addresses that passed the check. */
function checkedLookup(resolve: Resolver, allowAddress: (address: string) => boolean) {
  return (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    resolve(hostname).then(
      (addresses) => {
        // One address the policy refuses is enough to refuse the name: it may be the one a retry picks.
        const refused = addresses.find((address) => !allowAddress(address));
        if (addresses.length === 0 || refused !== undefined) {
          const detail = refused ? describeAddress(refused) : 'no address';
          callback(new BlockedAddressError(`${hostname} resolves to a non-public address (${detail})`), '');
          return;
        }
        const entries = addresses.map((address) => ({ address, family: isIP(address) }));
        if (options.all) callback(null, entries);
        else callback(null, entries[0]?.address ?? '', entries[0]?.family);
      },
      (error: NodeJS.ErrnoException) => callback(error, ''),
    );
  };
}

const isPublic = (address: string) => nonPublicRange(address) === undefined;

const describeAddress = (address: string) => `${address}, ${nonPublicRange(address) ?? 'not allowed'}`;

export class GuardedFetcher {
  private readonly agent: Agent;
  /** Connects to the trusted origins without the address check. */
  private readonly trustedAgent: Agent;
  private readonly allowAddress: (address: string) => boolean;
  private readonly trustedOrigins: ReadonlySet<string>;

  constructor(private readonly options: GuardOptions) {
    this.allowAddress = options.allowAddress ?? isPublic;
    this.trustedOrigins = new Set(options.trustedOrigins ?? []);
    // Each check is its own exchange; nothing is gained by keeping a user's server's sockets open.
    const oneShot = { keepAliveTimeout: 1, keepAliveMaxTimeout: 1 };
    this.agent = new Agent({
      connect: {
        timeout: options.timeoutMs,
        ...(options.allowPrivate
          ? {}
          : { lookup: checkedLookup(options.resolve ?? systemResolver, this.allowAddress) }),
      },
      ...oneShot,
    });
    this.trustedAgent = new Agent({ connect: { timeout: options.timeoutMs }, ...oneShot });
  }

  /**
   * GETs `url` through the guard, following redirects, and reads at most `maxBytes` (the configured cap by
   * default) of the final body, within the configured timeout and `signal`, whichever ends first.
   */
  async get(url: string, request: GuardedRequest = {}): Promise<GuardedResponse> {
    const { maxBytes = this.options.maxBytes } = request;
    const timeout = AbortSignal.timeout(this.options.timeoutMs);
    const signal = request.signal ? AbortSignal.any([timeout, request.signal]) : timeout;
    const { response, url: target } = await this.open(url, { ...request, signal });
    try {
      const { bytes, complete } = await readAtMost(response.body, Math.min(maxBytes, this.options.maxBytes));
      return { status: response.status, headers: response.headers as Headers, bytes, complete, url: target };
    } catch (error) {
      throw fetchFailure(error, target);
    }
  }

  /**
   * GETs `url` through the guard, following redirects, and gives the final response with its body unread, for
   * a caller that streams it (a result video is too large to hold). `signal` is its only deadline once
   * connected: the caller owns it.
   */
  async open(
    url: string,
    request: { headers?: Record<string, string>; signal: AbortSignal },
  ): Promise<{ response: OpenedResponse; url: string }> {
    let current = url;
    for (let hop = 0; ; hop++) {
      const target = this.checkedTarget(current);
      let response: OpenedResponse;
      try {
        response = await undiciFetch(target, {
          headers: request.headers ?? {},
          redirect: 'manual',
          signal: request.signal,
          dispatcher: this.isTrusted(target) ? this.trustedAgent : this.agent,
        });
      } catch (error) {
        throw fetchFailure(error, target);
      }
      const location = response.headers.get('location');
      if (response.status >= 300 && response.status < 400 && location) {
        await response.body?.cancel().catch(() => {});
        if (hop >= this.options.maxRedirects) {
          throw new GuardedFetchError(`redirects more than ${this.options.maxRedirects} times`);
        }
        current = new URL(location, target).toString();
        continue;
      }
      return { response, url: target };
    }
  }

  async close(): Promise<void> {
    await Promise.all([this.agent.close(), this.trustedAgent.close()]);
  }

  private isTrusted(url: string): boolean {
    return this.trustedOrigins.has(new URL(url).origin);
  }

  /** An http(s) URL without credentials; an address literal is checked here, as no lookup will see it. */
  private checkedTarget(value: string): string {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      throw new GuardedFetchError('is not a valid URL');
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new GuardedFetchError(`leads to a ${url.protocol} URL, not http(s)`);
    }
    if (url.username || url.password) throw new GuardedFetchError('must not carry credentials');
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    if (!this.options.allowPrivate && !this.isTrusted(url.href) && isIP(host) && !this.allowAddress(host)) {
      throw new BlockedAddressError(`points at a non-public address (${describeAddress(host)})`);
    }
    return url.toString();
  }
}

/** undici's own web stream type, which the DOM library's does not accept. */
type UndiciBody = Awaited<ReturnType<typeof undiciFetch>>['body'];

async function readAtMost(
  body: UndiciBody,
  maxBytes: number,
): Promise<{ bytes: Uint8Array; complete: boolean }> {
  if (!body) return { bytes: new Uint8Array(), complete: true };
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return { bytes: Buffer.concat(chunks), complete: true };
    const room = maxBytes - size;
    if (value.byteLength > room) {
      chunks.push(value.subarray(0, room));
      await reader.cancel().catch(() => {});
      return { bytes: Buffer.concat(chunks), complete: false };
    }
    chunks.push(value);
    size += value.byteLength;
  }
}

/** undici wraps connection errors in a TypeError("fetch failed"); the cause says what happened. */
function fetchFailure(error: unknown, url: string): GuardedFetchError {
  const host = new URL(url).host;
  for (let current = error, depth = 0; current && depth < 4; depth++) {
    if (current instanceof GuardedFetchError) return current;
    if (current instanceof Error && (current.name === 'TimeoutError' || current.name === 'AbortError')) {
      return new GuardedFetchError(`did not answer in time (${host})`);
    }
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('E')) {
      return new GuardedFetchError(`could not be reached (${host}: ${code})`);
    }
    current = (current as { cause?: unknown }).cause;
  }
  return new GuardedFetchError(`could not be reached (${host})`);
}
