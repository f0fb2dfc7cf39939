import { createHmac, timingSafeEqual } from 'node:crypto';
import { LRUCache } from 'lru-cache';

export type SignatureVerdict = 'valid' | 'invalid' | 'expired';

/**
 * Expiries are rounded up to the minute (for lifetimes of 10 minutes or more), so a URL stays the same for a
 * while and players and caches can reuse it.
 */
const expiryStepS = (ttlS: number) => (ttlS >= 600 ? 60 : 1);
/** Resources whose last query string is kept: a history page reads the same copies again and again. */
const REUSED_QUERIES = 10_000;

/**
 * Signs the gateway's own result URLs: HMAC-SHA256 over the resource path and the expiry (Unix seconds), so
 * neither can be changed without the key. Hand-written rather than a library's: it is one HMAC, and the URL
 * shape is the gateway's own.
 */
export class UrlSigner {
  /**
   * The last query string of each resource. While its expiry step lasts the same expiry gives the same
   * signature, so a copy read on every history page is signed once a minute, not on every read.
   */
  private readonly lastQuery = new LRUCache<string, { expires: number; query: string }>({
    max: REUSED_QUERIES,
  });

  constructor(private readonly key: Uint8Array) {}

  /** The query string (`expires=…&signature=…`) that makes `resource` readable for at least `ttlS`. */
  query(resource: string, ttlS: number, nowMs = Date.now()): string {
    const step = expiryStepS(ttlS);
    const expires = Math.ceil((nowMs / 1000 + ttlS) / step) * step;
    const last = this.lastQuery.get(resource);
    if (last?.expires === expires) return last.query;
    const query = `expires=${expires}&signature=${this.signature(resource, String(expires)).toString('base64url')}`;
    this.lastQuery.set(resource, { expires, query });
    return query;
  }

  /** The signature is checked first, in constant time, so an expiry can only be learnt from a genuine URL. */
  verify(
    resource: string,
    expires: string | null,
    signature: string | null,
    nowMs = Date.now(),
  ): SignatureVerdict {
    if (!expires || !signature || !/^\d{1,12}$/.test(expires)) return 'invalid';
    const expected = this.signature(resource, expires);
    const given = Buffer.from(signature, 'base64url');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return 'invalid';
    return Number(expires) * 1000 > nowMs ? 'valid' : 'expired';
  }

  private signature(resource: string, expires: string): Buffer {
    return createHmac('sha256', this.key).update(`${resource}\n${expires}`).digest();
  }
}
