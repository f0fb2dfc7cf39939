import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  attack,
  distinctPaddedQuery,
  LOOP_STALL_LIMIT_MS,
  longestLoopDelayMs,
  type ProductionStack,
  paddedQueryBody,
  rawRequest,
  settledHeapBytes,
  startProductionStack,
  watchHealth,
} from '../helpers/attack.js';

// Seen 1 (issue 8): about 175 distinct ~23 MB queries sent without a token filled yoga's parse cache until the
// heap ran out. Limits proved: MAX_REQUEST_BODY_BYTES (100 KB) and DOCUMENT_CACHE_BYTES (the parsed documents
// kept, by estimated heap, only once they passed validation).

const MB = 1024 * 1024;
const CAP = 102_400;

describe('seen 1: a flood of distinct large queries without a token', () => {
  let stack: ProductionStack;

  beforeAll(async () => {
    stack = await startProductionStack();
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('MAX_REQUEST_BODY_BYTES and DOCUMENT_CACHE_BYTES: heap stays within 100 MB of idle, /healthz answers', async () => {
    const { url } = stack.gateway;
    const idle = await settledHeapBytes();
    const health = watchHealth(url);
    const { result, maxMs } = await longestLoopDelayMs(async () => {
      // The issue's own queries: ~23 MB each, all distinct, with a Content-Length and chunked.
      const overCap = await attack(
        url,
        Array.from({ length: 8 }, (_, index) => ({
          headers: { 'content-type': 'application/json' },
          body: paddedQueryBody(index, 23 * MB),
          chunked: index % 2 === 1,
        })),
      );
      // Just under the cap: valid, distinct, and each one a document a cache could keep.
      const atCap = await attack(
        url,
        Array.from({ length: 200 }, (_, index) => ({
          headers: { 'content-type': 'application/json' },
          body: paddedQueryBody(1_000 + index, CAP - 100),
        })),
        8,
      );
      return {
        overCap: overCap.map((answer) => answer.status),
        atCap: atCap.map((answer) => (answer.head.includes('"__typename":"Query"') ? answer.status : 0)),
      };
    });
    const held = (await settledHeapBytes()) - idle;
    const { answered, failures } = await health.stop();
    console.info(
      `seen 1: heap +${(held / MB).toFixed(1)} MB after ${result.overCap.length} × 23 MB and ${result.atCap.length} × 100 KB distinct queries; longest loop delay ${maxMs.toFixed(0)} ms; /healthz ${answered} answered, ${failures.length} failed`,
    );

    // Refused: a 413, or, when the gateway closed before the attacker finished writing, no answer at all
    // (its kernel drops what it had not read). Never anything else.
    expect(result.overCap.filter((status) => status !== 413 && status !== 0)).toEqual([]);
    expect(result.atCap).toEqual(result.atCap.map(() => 200));
    expect(held).toBeLessThan(100 * MB);
    expect(failures).toEqual([]);
    expect(answered).toBeGreaterThan(0);
    // Before the limits, parsing one 23 MB query alone blocked the loop for seconds.
    expect(maxMs).toBeLessThan(LOOP_STALL_LIMIT_MS);
  }, 120_000);

  it('MAX_REQUEST_BODY_BYTES: the refusal is a GraphQL-shaped 413 on every HTTP path, chunked or not', async () => {
    const { url } = stack.gateway;
    const body = JSON.stringify({ query: distinctPaddedQuery(0, CAP + 1) });
    const paths: Array<{ path: string; accept: string }> = [
      { path: '/graphql', accept: 'application/json' },
      { path: '/graphql', accept: 'text/event-stream' },
      { path: '/graphql/stream', accept: 'text/event-stream' },
    ];
    for (const { path, accept } of paths) {
      for (const chunked of [false, true]) {
        const answer = await rawRequest(url, {
          path,
          headers: { 'content-type': 'application/json', accept },
          body,
          chunked,
        });
        expect({ path, accept, chunked, status: answer.status }).toEqual({
          path,
          accept,
          chunked,
          status: 413,
        });
        expect(JSON.parse(answer.body)).toEqual({
          errors: [
            expect.objectContaining({
              message: 'Request body too large',
              extensions: expect.objectContaining({ code: 'REQUEST_ENTITY_TOO_LARGE' }),
            }),
          ],
        });
      }
    }
  });

  // A JSON body whose Content-Length is within the cap is not counted again (chunked and multipart ones are):
  // the declared length bounds what the gateway reads, which these hold.
  it('a body longer than its Content-Length is read only up to it; Content-Length with chunked is refused', async () => {
    const { url } = stack.gateway;
    const operation = JSON.stringify({ query: '{ __typename }' });
    const longer = await rawRequest(url, {
      headers: { 'content-type': 'application/json', accept: 'application/json', connection: 'keep-alive' },
      // What follows the declared bytes is the next request on the connection (junk there would be answered
      // 400 by node before the first answer is out).
      body: `${operation}GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n`,
      declaredLength: Buffer.byteLength(operation),
    });
    expect(longer.status).toBe(200);
    // The operation alone was the body; the bytes past it were answered as a request of their own.
    expect(longer.body).toMatch(/^\{"data":\{"__typename":"Query"\}\}HTTP\/1\.1 200 /);

    const both = await rawRequest(url, {
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ query: distinctPaddedQuery(1, CAP + 1) }),
      chunked: true,
      declaredLength: 10,
    });
    expect(both.status).toBe(400);
  });

  it('a GET query string over 16 KB is refused before the gateway reads it', async () => {
    const query = encodeURIComponent(distinctPaddedQuery(0, 20_000));
    const answer = await rawRequest(stack.gateway.url, { method: 'GET', path: `/graphql?query=${query}` });
    expect(answer.status).toBe(431);
  });
});
