import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  attack,
  expectRefusedOnEveryStream,
  LOOP_STALL_LIMIT_MS,
  longestLoopDelayMs,
  type ProductionStack,
  startProductionStack,
} from '../helpers/attack.js';

// Seen 2 (issue 8): one 18 MB request with a million `@include` blocked the event loop for 12 s. Limits
// proved: MAX_REQUEST_BODY_BYTES (the 18 MB never reaches the parser), MAX_QUERY_TOKENS (the parser stops
// after 2,000 tokens, whatever the document's size under the cap) and MAX_QUERY_DIRECTIVES, on HTTP, both SSE
// paths and graphql-ws.

const directives = (count: number) => '@include(if: true) '.repeat(count);

describe('seen 2: a million @include', () => {
  let stack: ProductionStack;

  beforeAll(async () => {
    stack = await startProductionStack();
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('MAX_REQUEST_BODY_BYTES: ~18 MB of directives without a token is refused fast, the loop not blocked', async () => {
    const bomb = {
      prefix: '{"query":"{ __typename ',
      repeat: '@include(if: true) ',
      times: 1_000_000,
      suffix: '}"}',
    };
    const { result, maxMs } = await longestLoopDelayMs(() =>
      attack(
        stack.gateway.url,
        [false, true].map((chunked) => ({
          headers: { 'content-type': 'application/json' },
          body: bomb,
          chunked,
        })),
      ),
    );
    console.info(
      `seen 2: ${result.map((answer) => `${answer.status} in ${answer.elapsedMs.toFixed(0)} ms`).join(', ')}; longest loop delay ${maxMs.toFixed(0)} ms`,
    );
    // 413, or no answer when the gateway closed before the rest was written (see query-flood.test.ts).
    for (const answer of result) expect([413, 0]).toContain(answer.status);
    expect(maxMs).toBeLessThan(LOOP_STALL_LIMIT_MS);
  });

  it('MAX_QUERY_TOKENS, MAX_QUERY_DIRECTIVES: refused under the body cap, on HTTP', async () => {
    const cases = [
      { query: `{ __typename ${directives(5_000)} }`, limit: 'MAX_QUERY_TOKENS' },
      { query: `{ __typename ${directives(21)} }`, limit: 'MAX_QUERY_DIRECTIVES' },
    ];
    for (const { query, limit } of cases) {
      const started = performance.now();
      const response = await fetch(stack.gateway.graphqlUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query }),
      });
      const body = (await response.json()) as { errors?: Array<{ extensions?: Record<string, unknown> }> };
      expect({ limit, status: response.status }).toEqual({ limit, status: 400 });
      expect(body.errors?.[0]?.extensions).toMatchObject({ code: 'QUERY_LIMIT_EXCEEDED', limit });
      expect(performance.now() - started).toBeLessThan(5_000);
    }
    // At the limit: 20 directives, one per field, pass.
    const fields = Array.from({ length: 20 }, (_, index) => `f${index}: __typename @include(if: true)`);
    const allowed = await stack.gateway.gql(`{ ${fields.join(' ')} }`, {}, null);
    expect(allowed.errors).toBeUndefined();
    expect(Object.keys(allowed.data ?? {})).toHaveLength(20);
  });

  it('MAX_QUERY_TOKENS, MAX_QUERY_DIRECTIVES: refused alike over graphql-ws, SSE and graphql-sse', async () => {
    const subscription = (count: number) => `subscription { avatarTaskUpdated { id ${directives(count)} } }`;
    const cases = [
      { query: subscription(400), limit: 'MAX_QUERY_TOKENS' },
      { query: subscription(21), limit: 'MAX_QUERY_DIRECTIVES' },
    ];
    await expectRefusedOnEveryStream(stack.gateway, 'mallory', cases);
  });
});
