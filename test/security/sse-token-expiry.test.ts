import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signToken } from '../helpers/gateway.js';
import {
  type Received,
  subscribeFetchSse,
  subscribeGraphqlSse,
  TASK_UPDATED,
} from '../helpers/subscriptions.js';
import { type ProductionGateway, startProductionGateway } from './production-gateway.js';

/**
 * seen 8. Limit proved: an SSE stream does not outlive its token. At the token's `exp` every SSE transport
 * (the lean path, yoga's SSE, graphql-sse) sends one error with code UNAUTHENTICATED and completes, as
 * graphql-ws closes its socket with 4403.
 */
describe('SSE streams end when their token expires', () => {
  let gateway: ProductionGateway;
  beforeAll(async () => {
    gateway = await startProductionGateway();
  });
  afterAll(async () => {
    await gateway?.stop();
  });

  it('ends the lean SSE, yoga SSE and graphql-sse streams at exp with UNAUTHENTICATED', async () => {
    const token = await signToken('alice', '3s');
    const expiresAtMs = (decodeJwt(token).exp as number) * 1000;
    const operation = { query: TASK_UPDATED };
    const streams: Array<[string, Received<unknown>]> = [
      ['lean SSE', await subscribeFetchSse(gateway, { token }, operation)],
      [
        'yoga SSE',
        await subscribeFetchSse(gateway, { token }, operation, 'POST', 'application/json, text/event-stream'),
      ],
      ['graphql-sse', await subscribeGraphqlSse(gateway, { token }, operation)],
    ];
    for (const [name, stream] of streams) {
      const ending = await stream.waitForEnd(10_000);
      const endedAt = Date.now();
      expect({ name, ending }).toEqual({ name, ending: { kind: 'complete' } });
      expect(stream.errors.map((error) => error.extensions?.code)).toEqual(['UNAUTHENTICATED']);
      expect(endedAt).toBeGreaterThanOrEqual(expiresAtMs - 50);
      expect(endedAt).toBeLessThan(expiresAtMs + 5_000);
    }
  });
});
