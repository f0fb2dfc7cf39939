import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  connectWs,
  type FetchSseReceived,
  subscribeFetchSse,
  subscribeGraphqlSse,
  TASK_UPDATED,
} from '../helpers/subscriptions.js';
import { type ProductionGateway, startProductionGateway } from './production-gateway.js';

const MAX = 4;
const YOGA_SSE = 'application/json, text/event-stream';

async function opened(stream: FetchSseReceived<unknown>) {
  const { status, contentType } = await stream.response;
  return status === 200 && (contentType ?? '').startsWith('text/event-stream');
}

/**
 * seen 7. Limit proved: MAX_SOCKETS_PER_USER is one per-user cap on open streams over every transport
 * together (graphql-ws sockets, the lean SSE path, yoga's SSE, graphql-sse), not on graphql-ws sockets alone.
 */
describe('one per-user cap on open streams over every transport (MAX_SOCKETS_PER_USER)', () => {
  let gateway: ProductionGateway;
  beforeAll(async () => {
    gateway = await startProductionGateway({ MAX_SOCKETS_PER_USER: String(MAX) });
  });
  afterAll(async () => {
    await gateway?.stop();
  });

  it('counts a socket and each kind of SSE stream against the same cap, per user', async () => {
    const operation = { query: TASK_UPDATED };
    const socket = await connectWs(gateway, 'alice');
    await socket.connected;
    const lean = await subscribeFetchSse(gateway, 'alice', operation);
    const yogaSse = await subscribeFetchSse(gateway, 'alice', operation, 'POST', YOGA_SSE);
    expect(await opened(lean)).toBe(true);
    expect(await opened(yogaSse)).toBe(true);
    const graphqlSse = await subscribeGraphqlSse(gateway, 'alice', operation);
    // The graphql-sse stream has taken its slot once a fifth stream of any kind is refused.
    let refused: FetchSseReceived<unknown> | undefined;
    await vi.waitFor(async () => {
      refused?.stop();
      refused = await subscribeFetchSse(gateway, 'alice', operation);
      expect((await refused.response).status).toBe(429);
    });
    await refused?.waitForEnd();
    expect(refused?.errors[0]?.extensions?.code).toBe('TOO_MANY_STREAMS');
    expect(graphqlSse.ending).toBeUndefined();

    const yogaRefused = await subscribeFetchSse(gateway, 'alice', operation, 'POST', YOGA_SSE);
    await yogaRefused.waitForEnd();
    expect(yogaRefused.errors[0]?.extensions?.code).toBe('TOO_MANY_STREAMS');
    // graphql-sse answers as /graphql does: 429 before a stream opens.
    const sseProtocolRefused = await subscribeGraphqlSse(gateway, 'alice', operation);
    const sseProtocolEnding = await sseProtocolRefused.waitForEnd();
    expect(sseProtocolEnding.kind).toBe('error');
    expect(String((sseProtocolEnding as { error: unknown }).error)).toMatch(/429/);
    const secondSocket = await connectWs(gateway, 'alice');
    expect((await secondSocket.closed).code).toBe(4429);

    // Another user is not affected.
    const bob = await subscribeFetchSse(gateway, 'bob', operation);
    expect(await opened(bob)).toBe(true);

    // A stream that ends gives its slot back.
    lean.stop();
    await vi.waitFor(async () => {
      const again = await subscribeFetchSse(gateway, 'alice', operation);
      const ok = await opened(again);
      again.stop();
      expect(ok).toBe(true);
    });

    for (const stream of [yogaSse, graphqlSse, bob]) stream.stop();
    await socket.dispose();
    await secondSocket.dispose();
  });
});
