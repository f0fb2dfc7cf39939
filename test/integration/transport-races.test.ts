import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { useTestDatabase } from '../helpers/database.js';
import { metric, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { type SlowJwks, startSlowJwks } from '../helpers/slow-jwks.js';
import { connectWs } from '../helpers/subscriptions.js';

// A client that leaves while its token is still being checked: the moment each transport used to lose track
// of it. The identity provider's key set is held until the client has gone, then released.
describe('a client that leaves while its token is being verified', () => {
  const database = useTestDatabase('pglite');
  const started: Array<{ stop(): Promise<void> }> = [];
  afterEach(async () => {
    for (const resource of started.splice(0).reverse()) await resource.stop();
  });

  async function gatewayWithSlowJwks(env: Record<string, string> = {}) {
    const jwks: SlowJwks = await startSlowJwks();
    started.push({ stop: () => jwks.close() });
    const gateway: TestGateway = await startTestGateway({
      database,
      env: { AUTH_JWT_SECRET: '', AUTH_JWKS_URL: jwks.url, ...env },
    });
    started.push(gateway);
    return { jwks, gateway };
  }

  /** A query with the same token: once it is answered, the verification that was held has finished too. */
  async function afterVerification(gateway: TestGateway, token: string) {
    const response = await fetch(gateway.graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ query: '{ viewer { id } }' }),
    });
    expect(response.status).toBe(200);
    await response.arrayBuffer();
    await sleep(200);
  }

  it('SSE: the subscription it was starting is closed, not left open forever', async () => {
    const { jwks, gateway } = await gatewayWithSlowJwks();
    const token = await jwks.sign('leaver');
    const abort = new AbortController();
    const request = fetch(gateway.graphqlUrl, {
      method: 'POST',
      headers: {
        accept: 'text/event-stream',
        'content-type': 'application/json',
        authorization: `Bearer ${token}`,
      },
      body: JSON.stringify({ query: 'subscription { avatarTaskUpdated { id state } }' }),
      signal: abort.signal,
    }).catch(() => undefined);
    await jwks.requested;
    abort.abort();
    await request;
    // The gateway sees the connection close before the key set arrives.
    await sleep(300);
    jwks.release();
    await afterVerification(gateway, token);

    const open = await metric(gateway, 'avatar_gateway_active_subscriptions');
    console.log(`SSE client gone during token check: ${open} stream(s) left open on the gateway`);
    expect(open).toBe(0);
  });

  it('graphql-ws: the socket no longer counts against MAX_SOCKETS_PER_USER', async () => {
    const { jwks, gateway } = await gatewayWithSlowJwks({ MAX_SOCKETS_PER_USER: '1' });
    const token = await jwks.sign('leaver');
    const socket = new WebSocket(gateway.wsUrl, 'graphql-transport-ws');
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
    socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } }));
    await jwks.requested;
    socket.terminate();
    await sleep(300);
    jwks.release();
    await afterVerification(gateway, token);

    // The user's only allowed socket: refused with 4429 when the one that left still counts.
    const next = await connectWs(gateway, { token });
    const outcome = await Promise.race([
      next.connected.then(() => 'acknowledged'),
      next.closed.then((info) => `closed ${info.code}`),
    ]);
    await next.dispose();
    console.log(`socket closed during token check, then a new one for the same user: ${outcome}`);
    expect(outcome).toBe('acknowledged');
  });
});
