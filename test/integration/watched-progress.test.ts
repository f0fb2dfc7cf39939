import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startSimulatorServer } from '../../src/upstream/simulator.js';
import { createTestDatabase, databaseKinds, hasPostgres, type TestDatabase } from '../helpers/database.js';
import { createTaskOk, getTask, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import {
  connectWs,
  TASK_UPDATED,
  type TaskUpdatedData,
  tasksOf,
  type WsConnection,
} from '../helpers/subscriptions.js';

// kie calls back only at the end. Without a watcher the first poll is POLL_MIN_DELAY_MS (30 s) out, long after
// the simulator's three 3 s states, so a live UI would see WAITING jump to SUCCEEDED.
const DEFAULT_TIMING = {
  POLL_INTERVAL_MS: '1000',
  POLL_MIN_DELAY_MS: '30000',
  SIMULATOR_STEP_MS: '3000',
};
const WHOLE_RUN_MS = 30_000;

const user = () => `user-${randomUUID()}`;

const sockets: WsConnection[] = [];
afterEach(async () => {
  await Promise.all(sockets.splice(0).map((socket) => socket.dispose()));
});

async function watchToTheEnd(gateway: TestGateway, userId: string, id: string) {
  const socket = await connectWs(gateway, userId);
  sockets.push(socket);
  const received = socket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED, variables: { id } });
  expect(await received.waitForEnd(WHOLE_RUN_MS)).toEqual({ kind: 'complete' });
  return tasksOf(received);
}

describe.each(databaseKinds())('a watched task shows its progress on %s', (kind) => {
  let database: TestDatabase;
  let gateway: TestGateway;

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    gateway = await startTestGateway({ database, env: DEFAULT_TIMING });
  });
  afterAll(async () => {
    await gateway?.stop();
    await database?.dispose();
  });

  it(
    'streams WAITING, QUEUING, GENERATING, SUCCEEDED with the default poll and simulator timing',
    async () => {
      const alice = user();
      const task = await createTaskOk(gateway, undefined, alice);
      expect(task.state).toBe('WAITING');

      const received = await watchToTheEnd(gateway, alice, task.id);

      expect(received.map((update) => update.state)).toEqual([
        'WAITING',
        'QUEUING',
        'GENERATING',
        'SUCCEEDED',
      ]);
      const history = received.at(-1)?.events ?? [];
      // The middle states can only have come from polls made because someone was looking.
      expect(history.filter((event) => ['QUEUING', 'GENERATING'].includes(event.state))).toEqual([
        expect.objectContaining({ state: 'QUEUING', source: 'POLLER' }),
        expect.objectContaining({ state: 'GENERATING', source: 'POLLER' }),
      ]);
    },
    WHOLE_RUN_MS + 10_000,
  );
});

describe('a watched task within a small query budget', () => {
  it(
    'is checked before a crowd of due unwatched tasks, and kie is asked no more than KIE_MAX_QUERIES_PER_S',
    async () => {
      const database = await createTestDatabase('pglite');
      const kie = await startSimulatorServer({ knobs: { stepMs: 3000, callbackMode: 'drop' } });
      // One query a second, and eight unwatched tasks due at every tick (no first-poll delay, no callbacks):
      // in due order the watched task would wait its turn behind them and miss whole states.
      const gateway = await startTestGateway({
        database,
        kieUrl: kie.url,
        env: { ...DEFAULT_TIMING, POLL_MIN_DELAY_MS: '0', KIE_MAX_QUERIES_PER_S: '1' },
      });
      try {
        const alice = user();
        for (let i = 0; i < 8; i++) await createTaskOk(gateway, undefined, alice);
        const watched = await createTaskOk(gateway, undefined, alice);
        const startedAt = performance.now();
        const queriesBefore = kie.simulator.stats.queries;

        const received = await watchToTheEnd(gateway, alice, watched.id);

        expect(received.map((update) => update.state)).toEqual([
          'WAITING',
          'QUEUING',
          'GENERATING',
          'SUCCEEDED',
        ]);
        const seconds = (performance.now() - startedAt) / 1000;
        expect(kie.simulator.stats.queries - queriesBefore).toBeLessThanOrEqual(Math.ceil(seconds) + 1);
      } finally {
        await gateway.stop();
        await kie.close();
        await database.dispose();
      }
    },
    WHOLE_RUN_MS + 20_000,
  );
});

describe.runIf(hasPostgres())('watching across instances on Postgres', () => {
  it(
    "one instance's subscriber makes another instance's poller check the task; unwatched tasks wait as before",
    async () => {
      const database = await createTestDatabase('postgres');
      const kie = await startSimulatorServer({ knobs: { stepMs: 3000 } });
      // Instance A serves the subscriber; its poller ticks once at start and then not for ten minutes, so every
      // poll comes from instance B, which learns of the watcher only through the database.
      const a = await startTestGateway({
        database,
        kieUrl: kie.url,
        env: { ...DEFAULT_TIMING, POLL_INTERVAL_MS: '600000' },
      });
      const b = await startTestGateway({ database, kieUrl: kie.url, env: DEFAULT_TIMING });
      try {
        const alice = user();
        const watched = await createTaskOk(a, undefined, alice);
        const unwatched = await createTaskOk(a, undefined, alice);

        const received = await watchToTheEnd(a, alice, watched.id);
        expect(received.map((update) => update.state)).toEqual([
          'WAITING',
          'QUEUING',
          'GENERATING',
          'SUCCEEDED',
        ]);

        await expect
          .poll(async () => (await getTask(a, unwatched.id, alice))?.state, { timeout: 10_000 })
          .toBe('SUCCEEDED');
        const alone = await getTask(a, unwatched.id, alice);
        // Nobody looked: no poll, the callback brought the result, as before watching existed.
        expect(alone?.events.map((event) => [event.state, event.source])).toEqual([
          ['PENDING', 'MUTATION'],
          ['WAITING', 'MUTATION'],
          ['SUCCEEDED', 'CALLBACK'],
        ]);
      } finally {
        await Promise.all([a.stop(), b.stop()]);
        await kie.close();
        await database.dispose();
      }
    },
    WHOLE_RUN_MS + 20_000,
  );
});
