import { createClient } from 'graphql-sse';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { signToken } from '../helpers/gateway.js';
import { type ProductionGateway, startProductionGateway } from './production-gateway.js';

const TTL_MS = 1_000;
const MAX_PER_USER = 3;
const TOKEN_HEADER = 'x-graphql-event-stream-token';

/**
 * seen 5. Limits proved: graphql-sse's single connection mode reservations (`PUT /graphql/stream`) need a
 * valid token, are minted by the server, are bound to the user who made them, expire after
 * SSE_RESERVATION_TTL_MS when unused, and are capped by SSE_MAX_RESERVATIONS_PER_USER.
 */
describe('graphql-sse reservations', () => {
  let gateway: ProductionGateway;
  let streamUrl: string;
  const bearer = async (user: string) => ({ authorization: `Bearer ${await signToken(user)}` });
  const reserve = async (headers: Record<string, string>) =>
    fetch(streamUrl, { method: 'PUT', headers: { accept: 'text/plain', ...headers } });
  const listen = (token: string, headers: Record<string, string>) =>
    fetch(streamUrl, { headers: { accept: 'text/event-stream', [TOKEN_HEADER]: token, ...headers } });
  const operate = (token: string, headers: Record<string, string>) =>
    fetch(streamUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', [TOKEN_HEADER]: token, ...headers },
      body: JSON.stringify({ query: '{ viewer { id } }', extensions: { operationId: '1' } }),
    });

  beforeAll(async () => {
    gateway = await startProductionGateway({
      SSE_RESERVATION_TTL_MS: String(TTL_MS),
      SSE_MAX_RESERVATIONS_PER_USER: String(MAX_PER_USER),
    });
    streamUrl = `${gateway.graphqlUrl}/stream`;
  });
  afterAll(async () => {
    await gateway?.stop();
  });

  it('refuses a reservation without a valid token', async () => {
    expect((await reserve({})).status).toBe(401);
    expect((await reserve({ authorization: 'Bearer not-a-jwt' })).status).toBe(401);
  });

  it('mints the stream token itself and refuses one chosen by the client', async () => {
    const chosen = await reserve({ ...(await bearer('alice')), [TOKEN_HEADER]: 'my-own-token' });
    expect(chosen.status).toBe(400);
    const minted = await reserve(await bearer('alice'));
    expect(minted.status).toBe(201);
    expect(await minted.text()).toMatch(/^[A-Za-z0-9_-]{32}$/);
  });

  it("refuses another user's or no token on a reservation, and serves its owner", async () => {
    const alice = await bearer('alice-owner');
    const token = await (await reserve(alice)).text();
    expect((await listen(token, await bearer('bob'))).status).toBe(404);
    expect((await listen(token, {})).status).toBe(401);
    expect((await operate(token, await bearer('bob'))).status).toBe(404);
    expect((await operate(token, {})).status).toBe(401);

    const listener = await listen(token, alice);
    expect(listener.status).toBe(200);
    expect((await operate(token, alice)).status).toBe(202);
    const reader = (listener.body as ReadableStream<Uint8Array>).getReader();
    let text = '';
    while (!text.includes('"complete"') && !text.includes('event: complete')) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    expect(text).toContain('"viewer":{"id":"alice-owner"}');
    await reader.cancel();
  });

  it('drops a reservation nobody listens on within seconds', async () => {
    const alice = await bearer('alice-idle');
    const token = await (await reserve(alice)).text();
    // Asked once, after the TTL and the clock's one-second check: a listener opened earlier would be a use.
    await new Promise((resolve) => setTimeout(resolve, TTL_MS + 2_500));
    expect((await listen(token, alice)).status).toBe(404);
  });

  it('caps the reservations one user holds, and frees them as they expire', async () => {
    const carol = await bearer('carol');
    for (let held = 0; held < MAX_PER_USER; held++) expect((await reserve(carol)).status).toBe(201);
    expect((await reserve(carol)).status).toBe(429);
    expect((await reserve(await bearer('dave'))).status).toBe(201);
    await vi.waitFor(async () => expect((await reserve(carol)).status).toBe(201), {
      timeout: TTL_MS + 5_000,
      interval: 250,
    });
  });

  it("still works with graphql-sse's own client in single connection mode", async () => {
    const client = createClient({
      url: streamUrl,
      singleConnection: true,
      retryAttempts: 0,
      headers: await bearer('erin'),
    });
    const result = await new Promise((resolve, reject) => {
      let value: unknown;
      client.subscribe(
        { query: '{ viewer { id } }' },
        { next: (next) => (value = next), error: reject, complete: () => resolve(value) },
      );
    });
    client.dispose();
    expect(result).toEqual({ data: { viewer: { id: 'erin' } } });
  });
});
