import { createHash, timingSafeEqual } from 'node:crypto';

export interface MetricsAccess {
  /** METRICS_TOKEN: when set, /metrics needs `Authorization: Bearer <it>`. */
  token: string | undefined;
  /** Without a token: serve /metrics to anyone (outside production) or not at all (production). */
  publicWhenNoToken: boolean;
}

const digest = (value: string) => createHash('sha256').update(value).digest();

/**
 * Who may read /metrics, as the answer to give: undefined to serve it, else the refusal. The token is compared
 * as SHA-256 digests with timingSafeEqual, so neither its content nor its length leaks through timing.
 */
export function refuseMetrics(access: MetricsAccess, authorization: string | null): Response | undefined {
  if (access.token === undefined) {
    return access.publicWhenNoToken ? undefined : new Response('Not found\n', { status: 404 });
  }
  const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
  if (match?.[1] && timingSafeEqual(digest(match[1]), digest(access.token))) return undefined;
  return new Response('Unauthorized\n', { status: 401, headers: { 'WWW-Authenticate': 'Bearer' } });
}
