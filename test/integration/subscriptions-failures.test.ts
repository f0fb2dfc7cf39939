import { randomUUID } from 'node:crypto';
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
