import { describe, expect, it } from 'vitest';
import { networkError } from '../../src/upstream/kie-client.js';

/** A failed fetch as undici reports it: a TypeError whose cause carries the code. */
const fetchFailed = (cause: unknown) => Object.assign(new TypeError('fetch failed'), { cause });

describe('networkError', () => {
  it.each([
    ['a refused connection', { code: 'ECONNREFUSED' }],
    ['a connect timeout', { code: 'UND_ERR_CONNECT_TIMEOUT' }],
    ['a name that does not resolve', { code: 'ENOTFOUND' }],
    ['a refused connection on every address', { cause: { code: 'ECONNREFUSED' } }],
  ])('%s was never sent: retryable', (_what, cause) => {
    expect(networkError(fetchFailed(cause)).kind).toBe('retryable');
  });

  it.each([
    ['a reset after the request went out', fetchFailed({ code: 'ECONNRESET' })],
    ['a closed socket', fetchFailed({ code: 'UND_ERR_SOCKET' })],
    ['the answer timing out', new DOMException('The operation was aborted due to timeout', 'TimeoutError')],
  ])('%s may have reached kie: unknown', (_what, error) => {
    expect(networkError(error).kind).toBe('unknown_outcome');
  });
});
