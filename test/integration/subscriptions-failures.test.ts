import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import postgres from 'postgres';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { TASK_CHANNEL } from '../../src/events/postgres-bus.js';
import { taskIdFromGlobalId } from '../../src/graphql/types/avatar-task.js';
import { databaseKinds, hasPostgres } from '../helpers/database.js';
import { createTaskOk } from '../helpers/gateway.js';
import {
  connectWs,
  type Stack,
  startStack,
  subscribeFetchSse,
  TASK_UPDATED,
  type TaskUpdatedData,
  type WsConnection,
} from '../helpers/subscriptions.js';

const sockets: WsConnection[] = [];
afterEach(async () => {
  await Promise.all(sockets.splice(0).map((socket) => socket.dispose()));
});

describe.each(databaseKinds())('graphql-ws connection housekeeping on %s', (kind) => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack(kind, { stepMs: 200 });
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('closes a socket that never sends connection_init with 4408 after about 3 s', async () => {
    const socket = new WebSocket(stack.gateway.wsUrl, 'graphql-transport-ws');
    const opened = performance.now();
    const closed = await new Promise<{ code: number; reason: string }>((resolve) =>
      socket.on('close', (code, reason) => resolve({ code, reason: String(reason) })),
    );
    const waitedMs = performance.now() - opened;
    expect(closed).toEqual({ code: 4408, reason: 'Connection initialisation timeout' });
    expect(waitedMs).toBeGreaterThan(2_900);
    expect(waitedMs).toBeLessThan(5_000);
  });

  it('serves operation after operation on a socket once connection_init has passed', async () => {
    const connection = await connectWs(stack.gateway, `user-${randomUUID()}`);
    sockets.push(connection);
    await connection.connected;
    // The token is let go after connection_init: the verified viewer is what every later operation uses.
    for (let round = 0; round < 3; round++) {
      expect(await connection.query<{ viewer: { id: string } }>('{ viewer { id } }')).toMatchObject({
        viewer: { id: expect.stringMatching(/^user-/) },
      });
    }
  });
});

describe('graphql-ws with tokens from a slow identity provider (JWKS)', () => {
  // The provider answers its key set only after the 3 s connection_init deadline (checked every second)
  // has surely passed, and before jose gives up on it (5 s).
  const JWKS_DELAY_MS = 4_200;
  let stack: Stack;
  let jwks: Server;
  let privateKey: CryptoKey;

  beforeAll(async () => {
    const pair = await generateKeyPair('RS256');
    privateKey = pair.privateKey;
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'test-key', alg: 'RS256', use: 'sig' };
    jwks = createServer((_request, response) => {
      setTimeout(() => {
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end(JSON.stringify({ keys: [jwk] }));
      }, JWKS_DELAY_MS);
    });
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    const jwksUrl = `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/jwks.json`;
    stack = await startStack('pglite', { stepMs: 200 }, { AUTH_JWT_SECRET: '', AUTH_JWKS_URL: jwksUrl });
  });
  afterAll(async () => {
    await stack?.stop();
    jwks?.close();
  });

  const providerToken = (userId: string) =>
    new SignJWT({})
      .setProtectedHeader({ alg: 'RS256', kid: 'test-key' })
      .setSubject(userId)
      .setIssuedAt()
      .setExpirationTime('1h')
      .sign(privateKey);

  it('accepts a socket whose connection_init arrived in time, however long the token check takes', async () => {
    const userId = `user-${randomUUID()}`;
    const connection = await connectWs(stack.gateway, { token: await providerToken(userId) });
    sockets.push(connection);
    const outcome = await Promise.race([
      connection.connected.then(() => 'connected'),
      connection.closed.then((close) => `closed ${close.code}`),
    ]);
    expect(outcome).toBe('connected');
    expect(await connection.query<{ viewer: { id: string } }>('{ viewer { id } }')).toEqual({
      viewer: { id: userId },
    });
  });
});

describe.runIf(hasPostgres())('a database failure in the middle of a subscription', () => {
  let stack: Stack;
  let sql: postgres.Sql;
  beforeAll(async () => {
    // kie takes a minute per state: the task sits in WAITING while the database breaks under it.
    stack = await startStack('postgres', { stepMs: 60_000 });
    sql = postgres(stack.database.url as string, { max: 1, onnotice: () => {} });
  });
  afterAll(async () => {
    await sql?.end();
    await stack?.stop();
  });

  it('reaches graphql-ws and SSE clients as "Unexpected error.", never as the database message', async () => {
    const user = `user-${randomUUID()}`;
    const task = await createTaskOk(stack.gateway, undefined, user);
    const operation = { query: TASK_UPDATED, variables: { id: task.id } };
    const connection = await connectWs(stack.gateway, user);
    sockets.push(connection);
    const overWs = connection.subscribe<TaskUpdatedData>(operation);
    const overSse = await subscribeFetchSse<TaskUpdatedData>(stack.gateway, user, operation);
    await overWs.until((received) => received.data.length > 0);
    await overSse.until((received) => received.data.length > 0);

    await sql`alter table avatar_tasks rename to avatar_tasks_gone`;
    try {
      // A change signalled by another instance: both streams re-read the row and fail.
      const taskId = taskIdFromGlobalId(task.id);
      await sql`select pg_notify(${TASK_CHANNEL}, ${JSON.stringify({ taskId, userId: user, version: 99 })})`;

      const wsEnding = await overWs.waitForEnd();
      expect(wsEnding.kind).toBe('error');
      const wsErrors = (wsEnding as { error: Array<{ message: string; extensions?: object }> }).error;
      expect(wsErrors).toEqual([
        expect.objectContaining({
          message: 'Unexpected error.',
          extensions: expect.objectContaining({ code: 'INTERNAL_SERVER_ERROR' }),
        }),
      ]);

      await overSse.until((received) => received.errors.length > 0 || received.ending !== undefined);
      expect(overSse.errors.map((error) => error.message)).toEqual(['Unexpected error.']);
      expect(JSON.stringify([wsErrors, overSse.results])).not.toMatch(/avatar_tasks|relation/);
    } finally {
      await sql`alter table avatar_tasks_gone rename to avatar_tasks`;
    }
  });
});
