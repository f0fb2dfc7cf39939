import postgres from 'postgres';
import { describe, expect, it } from 'vitest';
import type { CallbackMode } from '../../src/upstream/simulator.js';
import { hasPostgres, useTestDatabase } from '../helpers/database.js';
import { CREATE_TASK, type CreateResult, sampleInput, type TestGateway } from '../helpers/gateway.js';
import {
  connectWs,
  type Received,
  subscribeFetchSse,
  TASK_UPDATED,
  type TaskUpdatedData,
  tasksOf,
} from '../helpers/subscriptions.js';
import { useFaultStack } from './fault-stack.js';

const TASKS = 50;

async function createWithRetries(
  gateway: TestGateway,
  user: string,
  idempotencyKey: string,
): Promise<string> {
  for (let attempt = 1; ; attempt += 1) {
    const result = await gateway.gql<{ createAvatarTask: CreateResult }>(
      CREATE_TASK,
      { input: sampleInput({ idempotencyKey }) },
      user,
    );
    const created = result.data?.createAvatarTask;
    if (created && 'task' in created) return created.task.id;
    if (attempt >= 5) throw new Error(`create failed: ${JSON.stringify(result)}`);
  }
}
const USERS = 5;
/** Issue 9's bar: every task final and every subscriber told, within 30 s of the flows dying. */
const BUDGET_MS = 30_000;

/**
 * Issue 9, seen 1: with every existing database flow black-holed (no RST, no FIN) while new connections work,
 * the poller's tick awaited a query that never returned and the LISTEN connection went deaf for good: 257 of
 * 300 subscribers stayed at WAITING, and with callbacks lost no task finished at all. Now dead connections are
 * found by their silence, the listener by its heartbeat, and the poller's tick by its deadline.
 */
describe.skipIf(!hasPostgres())('after every database flow is black-holed', () => {
  const database = useTestDatabase('postgres');
  const startStack = useFaultStack(database);

  it.each(['normal', 'drop'] as CallbackMode[])(
    'every task ends and every subscriber hears it within 30 s (callbacks %s)',
    async (callbackMode) => {
      const { proxy, gateway } = await startStack(
        // Three states of 2 s each: the flows die while every task is still running at kie.
        { stepMs: 2_000, callbackMode },
        {
          KIE_MAX_CREATES_PER_10S: '1000',
          KIE_MAX_QUERIES_PER_S: '1000',
          POLL_MIN_DELAY_MS: '1000',
          POLL_MAX_DELAY_MS: '1000',
        },
      );
      const users = Array.from({ length: USERS }, (_, index) => `black-hole-${callbackMode}-${index}`);
      // One create at a time, each retried while the (shared, busy) test database answers 503: creates share
      // one advisory lock (kie's window), and this setup is not what is under test. The idempotency key makes
      // a retry safe.
      const tasks: Array<{ user: string; id: string }> = [];
      for (let index = 0; index < TASKS; index += 1) {
        const user = users[index % USERS] as string;
        tasks.push({ user, id: await createWithRetries(gateway, user, `black-hole-${index}`) });
      }

      // Two subscribers per task: one over graphql-ws (a socket per user), one over SSE.
      const sockets = await Promise.all(users.map((user) => connectWs(gateway, user)));
      await Promise.all(sockets.map((socket) => socket.connected));
      const subscribers: Array<Received<TaskUpdatedData>> = [];
      for (const task of tasks) {
        const socket = sockets[users.indexOf(task.user)];
        subscribers.push(
          socket!.subscribe<TaskUpdatedData>({ query: TASK_UPDATED, variables: { id: task.id } }),
        );
        subscribers.push(
          await subscribeFetchSse<TaskUpdatedData>(gateway, task.user, {
            query: TASK_UPDATED,
            variables: { id: task.id },
          }),
        );
      }
      // Every subscriber has its first payload: the streams are live before the flows die.
      await Promise.all(subscribers.map((received) => received.until((r) => r.results.length > 0, 10_000)));

      proxy.blackHole();
      const diedAt = performance.now();

      const finished = await Promise.allSettled(
        subscribers.map((received) => received.waitForEnd(BUDGET_MS)),
      );
      const heardMs = Math.round(
        Math.max(0, ...subscribers.map((received) => (received.arrivals.at(-1) ?? diedAt) - diedAt)),
      );

      // The truth, read past the proxy.
      const direct = postgres(database.url as string, { max: 1, onnotice: () => {} });
      const rows = await direct<Array<{ state: string; count: number }>>`
        select state, count(*)::int as count from avatar_tasks
        where user_id like ${`black-hole-${callbackMode}-%`} group by state`;
      await direct.end();
      const states = Object.fromEntries(rows.map((row) => [row.state, row.count]));
      const misses = subscribers.filter((received) => tasksOf(received).at(-1)?.state !== 'SUCCEEDED').length;
      const duplicates = subscribers.reduce((sum, received) => {
        const versions = tasksOf(received).map((task) => task.version);
        return sum + versions.length - new Set(versions).size;
      }, 0);
      const incomplete = finished.filter(
        (outcome) => outcome.status === 'rejected' || outcome.value.kind !== 'complete',
      ).length;
      const figures = {
        callbackMode,
        tasks: TASKS,
        subscribers: subscribers.length,
        states,
        stuck: TASKS - (states.SUCCEEDED ?? 0),
        subscriberMisses: misses,
        incomplete,
        duplicates,
        lastHeardSeconds: heardMs / 1000,
        flowsBlackHoled: proxy.acceptedConnections() - proxy.liveFlows(),
      };
      console.log('black-holed database flows:', JSON.stringify(figures));
      for (const received of subscribers
        .filter((r) => tasksOf(r).at(-1)?.state !== 'SUCCEEDED')
        .slice(0, 3)) {
        console.log('MISS', JSON.stringify({ results: received.results.slice(-2), ending: received.ending }));
      }
      await Promise.all(sockets.map((socket) => socket.dispose()));

      expect(states).toEqual({ SUCCEEDED: TASKS });
      expect(misses).toBe(0);
      expect(incomplete).toBe(0);
      expect(duplicates).toBe(0);
      expect(heardMs).toBeLessThan(BUDGET_MS);
    },
    90_000,
  );
});
