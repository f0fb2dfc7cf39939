import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import postgres from 'postgres';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { TaskSignal } from '../../src/events/bus.js';
import { TASK_CHANNEL } from '../../src/events/postgres-bus.js';
import { startSimulatorServer } from '../../src/upstream/simulator.js';
import { createTestDatabase, hasPostgres, type TestDatabase } from '../helpers/database.js';
import { createTaskOk, metric, sampleInput, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import {
  connectWs,
  pendingTaskId,
  type Received,
  TASK_UPDATED,
  type TaskUpdatedData,
  taskRow,
  tasksOf,
  type WsConnection,
} from '../helpers/subscriptions.js';

const redisUrl = process.env.TEST_REDIS_URL;
const user = () => `user-${randomUUID()}`;

const buses = [
  { bus: 'postgres', env: {} as Record<string, string>, enabled: hasPostgres() },
  { bus: 'redis', env: { REDIS_URL: redisUrl ?? '' }, enabled: hasPostgres() && Boolean(redisUrl) },
];

/** The backends of a database that sit in LISTEN: one per gateway instance on the Postgres bus. */
async function pgListeners(admin: postgres.Sql, database: TestDatabase): Promise<number[]> {
  const name = new URL(database.url as string).pathname.slice(1);
  const rows = await admin<{ pid: number }[]>`
    select pid from pg_stat_activity where datname = ${name} and query ilike 'listen%'`;
  return rows.map((row) => row.pid);
}

async function killPgListeners(admin: postgres.Sql, database: TestDatabase): Promise<number[]> {
  const pids = await pgListeners(admin, database);
  if (pids.length > 0) await admin`select pg_terminate_backend(pid) from unnest(${pids}::int[]) as pid`;
  return pids;
}

/**
 * Redis clients in subscriber mode. Only gateways subscribe on the test Redis, and a gateway of another
 * test file that loses its connection here just re-reads its subscriptions, which is the behaviour under test.
 */
async function redisSubscribers(admin: Redis): Promise<string[]> {
  const list = String(await admin.call('CLIENT', 'LIST', 'TYPE', 'pubsub'));
  return list
    .split('\n')
    .filter((line) => / sub=[1-9]/.test(line))
    .map((line) => /\bid=(\d+)/.exec(line)?.[1] ?? '')
    .filter(Boolean);
}

/** Two gateway instances on one Postgres database, each with its own pool, bus and poller. */
async function startCluster(env: Record<string, string>, knobs = { stepMs: 250, createDelayMs: 150 }) {
  const database = await createTestDatabase('postgres');
  const kie = await startSimulatorServer({ knobs });
  const a = await startTestGateway({ database, kieUrl: kie.url, env });
  const b = await startTestGateway({ database, kieUrl: kie.url, env });
  return {
    database,
    kie,
    a,
    b,
    stop: async () => {
      await Promise.all([a.stop(), b.stop()]);
      await kie.close();
      await database.dispose();
    },
  };
}

const sockets: WsConnection[] = [];
async function connect(gateway: TestGateway, userId: string): Promise<WsConnection> {
  const socket = await connectWs(gateway, userId);
  sockets.push(socket);
  return socket;
}
afterEach(async () => {
  await Promise.all(sockets.splice(0).map((socket) => socket.dispose()));
});

/** Every version of a task from `first` on, once each and in order, ending SUCCEEDED. */
function expectEveryVersion(received: Received<TaskUpdatedData>, taskId: string, first = 1) {
  const updates = tasksOf(received).filter((task) => task.id === taskId);
  const last = updates.at(-1);
  expect(last?.state).toBe('SUCCEEDED');
  expect(updates.map((task) => task.version)).toEqual(
    last?.events.map((event) => event.version).filter((version) => version >= first),
  );
}

describe.each(buses)('two instances on one Postgres, signals over $bus', ({ bus, env, enabled }) => {
  let cluster: Awaited<ReturnType<typeof startCluster>>;

  beforeAll(async () => {
    if (enabled) cluster = await startCluster(env);
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it.skipIf(!enabled)(
    "delivers on instance A the changes instance B applied, kie's callback included",
    async () => {
      const { a, b } = cluster;
      const alice = user();
      const callbacksOk = 'avatar_gateway_callbacks_total{status="200"}';
      const [aCallbacks, bCallbacks] = [await metric(a, callbacksOk), await metric(b, callbacksOk)];
      // Created through B, so B submits it and kie calls B back; watched on A from its very first version.
      const creating = createTaskOk(b, sampleInput(), alice);
      const id = await pendingTaskId(a, alice);
      const socket = await connect(a, alice);
      const received = socket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED, variables: { id } });
      await creating;

      expect(await received.waitForEnd()).toEqual({ kind: 'complete' });
      expect(tasksOf(received).map((task) => [task.state, task.version])).toEqual([
        ['PENDING', 1],
        ['WAITING', 2],
        ['SUCCEEDED', 3],
      ]);
      expect(tasksOf(received).at(-1)?.events.at(-1)?.source).toBe('CALLBACK');
      // B counts the callback once it has answered kie, which can be a moment after A has delivered the change.
      await expect.poll(() => metric(b, callbacksOk), { timeout: 5_000 }).toBe(bCallbacks + 1);
      expect(await metric(a, callbacksOk)).toBe(aCallbacks);
    },
  );

  it.skipIf(!enabled)(
    "streams a user's tasks from both instances to user-wide subscribers on both",
    async () => {
      const { a, b } = cluster;
      const [alice, bob] = [user(), user()];
      const [onA, onB] = [await connect(a, alice), await connect(b, alice)];
      const streams = [onA, onB].map((socket) => socket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED }));
      await Promise.all([onA.query('{ viewer { id } }'), onB.query('{ viewer { id } }')]);

      const tasks = await Promise.all([
        createTaskOk(a, sampleInput(), alice),
        createTaskOk(b, sampleInput(), alice),
        createTaskOk(b, sampleInput(), alice),
      ]);
      const foreign = await createTaskOk(a, sampleInput(), bob);
      for (const stream of streams) {
        await stream.until(
          (received) =>
            tasksOf(received).filter((task) => task.state === 'SUCCEEDED').length === tasks.length,
          10_000,
          'every task to finish',
        );
        for (const task of tasks) expectEveryVersion(stream, task.id);
        expect(tasksOf(stream).some((task) => task.id === foreign.id)).toBe(false);
      }
    },
  );

  it.skipIf(!enabled)('recovers a signal lost while the listening connection was away', async () => {
    const { a, kie, database } = cluster;
    const alice = user();
    // Callbacks dropped and the poller a minute away: nothing but this test moves the task.
    kie.simulator.knobs.callbackMode = 'drop';
    const task = await createTaskOk(a, sampleInput(), alice);
    kie.simulator.knobs.callbackMode = 'normal';
    const socket = await connect(a, alice);
    const byId = socket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED, variables: { id: task.id } });
    const userWide = socket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED });
    await byId.until((received) => received.data.length === 1);
    await socket.query('{ viewer { id } }');

    // A change whose signal never went out, as if it had been published while the listener was away.
    const row = await taskRow(a, task.id);
    const lost = await a.app.service.repository.transition(row.id, 'CALLBACK', () => ({
      target: { state: 'SUCCEEDED', resultUrls: ['https://cdn.example.com/lost.mp4'] },
    }));
    expect(lost?.changed).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(byId.data).toHaveLength(1);
    expect(userWide.data).toHaveLength(0);

    // Drop every instance's listening connection; the bus reconnects it and asks subscribers to re-read.
    let listening: () => Promise<unknown[]>;
    let killed: unknown[];
    const pg = postgres(process.env.TEST_DATABASE_URL as string, { max: 1, onnotice: () => {} });
    const redis = bus === 'redis' ? new Redis(redisUrl as string) : undefined;
    try {
      if (redis) {
        listening = () => redisSubscribers(redis);
        killed = await listening();
        for (const id of killed) await redis.client('KILL', 'ID', id as string);
      } else {
        listening = () => pgListeners(pg, database);
        killed = await killPgListeners(pg, database);
      }
      expect(killed.length).toBeGreaterThanOrEqual(2);

      expect(await byId.waitForEnd()).toEqual({ kind: 'complete' });
      expect(tasksOf(byId).map((update) => [update.state, update.version])).toEqual([
        ['WAITING', 2],
        ['SUCCEEDED', 3],
      ]);
      await userWide.until((received) => tasksOf(received).some((update) => update.state === 'SUCCEEDED'));
      expect(tasksOf(userWide).map((update) => update.version)).toEqual([3]);

      // Listening again on new connections, and live signals flow through them.
      await expect
        .poll(async () => (await listening()).filter((id) => !killed.includes(id)).length, {
          timeout: 10_000,
        })
        .toBeGreaterThanOrEqual(2);
      const next = await createTaskOk(a, sampleInput(), alice);
      await userWide.until((received) =>
        tasksOf(received).some((update) => update.id === next.id && update.state === 'SUCCEEDED'),
      );
      expectEveryVersion(userWide, next.id);
    } finally {
      redis?.disconnect();
      await pg.end();
    }
  });

  it.skipIf(!enabled)('signals only task id, user id and version, after the change is visible', async () => {
    const { a, database } = cluster;
    const signals: TaskSignal[] = [];
    const stale: string[] = [];
    const reader = postgres(database.url as string, { max: 1, onnotice: () => {} });
    const check = async (payload: string) => {
      const signal = JSON.parse(payload) as TaskSignal;
      signals.push(signal);
      // Published after commit: another connection already sees at least that version.
      const [row] = await reader<
        { version: number }[]
      >`select version from avatar_tasks where id = ${signal.taskId}`;
      if (!row || row.version < signal.version) stale.push(payload);
    };
    let unlisten: () => Promise<void>;
    if (bus === 'postgres') {
      const listener = await reader.listen(TASK_CHANNEL, (payload) => void check(payload));
      unlisten = () => listener.unlisten();
    } else {
      const subscriber = new Redis(redisUrl as string);
      await subscriber.subscribe(TASK_CHANNEL);
      subscriber.on('message', (_channel: string, payload: string) => void check(payload));
      unlisten = async () => {
        subscriber.disconnect();
      };
    }
    try {
      const alice = user();
      const task = await createTaskOk(a, sampleInput(), alice);
      const row = await taskRow(a, task.id);
      await expect
        .poll(() => signals.filter((signal) => signal.taskId === row.id).map((signal) => signal.version), {
          timeout: 10_000,
        })
        .toEqual([1, 2, 3]);
      const mine = signals.filter((signal) => signal.taskId === row.id);
      expect(mine.every((signal) => Object.keys(signal).sort().join() === 'taskId,userId,version')).toBe(
        true,
      );
      expect(mine.every((signal) => signal.userId === alice)).toBe(true);
      expect(stale).toEqual([]);
    } finally {
      await unlisten();
      await reader.end();
    }
  });
});

describe.skipIf(!hasPostgres())('the Postgres listening connection killed over and over', () => {
  let cluster: Awaited<ReturnType<typeof startCluster>>;
  let admin: postgres.Sql;

  beforeAll(async () => {
    cluster = await startCluster({}, { stepMs: 300, createDelayMs: 0 });
    admin = postgres(process.env.TEST_DATABASE_URL as string, { max: 1, onnotice: () => {} });
  });
  afterAll(async () => {
    await admin?.end();
    await cluster?.stop();
  });

  it('still gets every subscriber its final state, each version once', async () => {
    const { a, b, database } = cluster;
    const alice = user();
    // Created on B (callbacks go to B), watched on A: every change crosses through A's listener.
    const tasks = await Promise.all(Array.from({ length: 20 }, () => createTaskOk(b, sampleInput(), alice)));
    const socket = await connect(a, alice);
    const streams = tasks.map((task) =>
      socket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED, variables: { id: task.id } }),
    );
    let killing = true;
    let kills = 0;
    const killer = (async () => {
      while (killing) {
        kills += (await killPgListeners(admin, database)).length;
        await new Promise((resolve) => setTimeout(resolve, 40));
      }
    })();
    try {
      for (const stream of streams) expect(await stream.waitForEnd(15_000)).toEqual({ kind: 'complete' });
    } finally {
      killing = false;
      await killer;
    }
    expect(kills).toBeGreaterThan(2);
    tasks.forEach((task, index) => {
      const stream = streams[index] as Received<TaskUpdatedData>;
      expectEveryVersion(stream, task.id, tasksOf(stream)[0]?.version);
    });
  });
});
