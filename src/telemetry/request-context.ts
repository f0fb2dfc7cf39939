import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';

/**
 * The id of the request being served, for every log line written while serving it and for the errors it
 * answers with, so a user's "request abc failed" finds its log lines. A client may send its own
 * `X-Request-Id` (a load balancer's, say); anything that does not look like an id is replaced.
 */
const storage = new AsyncLocalStorage<string>();

const ACCEPTABLE_ID = /^[A-Za-z0-9._:-]{8,128}$/;

export const REQUEST_ID_HEADER = 'x-request-id';

export function requestIdFrom(header: string | string[] | undefined): string {
  const value = Array.isArray(header) ? header[0] : header;
  return value && ACCEPTABLE_ID.test(value) ? value : randomUUID();
}

export function withRequestId<T>(requestId: string, work: () => T): T {
  return storage.run(requestId, work);
}

export function currentRequestId(): string | undefined {
  return storage.getStore();
}

/**
 * Runs `work` outside any request: a timer it starts (a background loop a request woke) would otherwise carry
 * the waking request's id into every line it logs from then on.
 */
export function outsideRequest<T>(work: () => T): T {
  return storage.exit(work);
}
