import type { CORSOptions } from '@whatwg-node/server';

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

/**
 * Which browser origins may call the gateway (CORS_ORIGINS), for yoga's CORS plugin, the lean SSE path and the
 * graphql-ws upgrade alike. whatwg-node's helper, given no list, reflects any Origin (also `null`) with
 * credentials, and given a list answers `null` to an origin not on it, which a sandboxed page would match: here
 * an origin not allowed gets no CORS headers at all, and credentials only when configured.
 */
export class CorsPolicy {
  constructor(
    private readonly origins: string[] | 'localhost',
    private readonly credentials: boolean,
  ) {}

  allows(origin: string | null | undefined): boolean {
    if (!origin || origin === 'null') return false;
    if (this.origins !== 'localhost') return this.origins.includes(origin);
    try {
      return LOOPBACK_HOSTS.has(new URL(origin).hostname);
    } catch {
      return false;
    }
  }

  /** Options for whatwg-node's CORS helper for this request: answer with its own origin, or not at all. */
  optionsFor(request: Pick<Request, 'headers'>): CORSOptions {
    const origin = request.headers.get('origin');
    if (!this.allows(origin)) return false;
    return { origin: [origin as string], credentials: this.credentials, maxAge: 600 };
  }

  /**
   * Whether a WebSocket upgrade may proceed: a non-browser client sends no Origin, a page of the gateway's own
   * origin is same-origin, anything else must be allowed.
   */
  allowsUpgrade(origin: string | undefined, host: string | undefined): boolean {
    if (origin === undefined) return true;
    if (this.allows(origin)) return true;
    try {
      return host !== undefined && new URL(origin).host === host;
    } catch {
      return false;
    }
  }
}
