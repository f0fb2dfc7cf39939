import { randomBytes, randomUUID } from 'node:crypto';
import { encodeGlobalID } from '@pothos/plugin-relay';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { avatarTaskEvents, avatarTasks } from '../../src/db/schema.js';
import { databaseKinds } from '../helpers/database.js';
import { CREATE_TASK, type CreateResult, sampleInput, type TaskView } from '../helpers/gateway.js';
import {
  connectWs,
  percentile,
  postSuccessCallback,
  type Received,
  type Stack,
  startStack,
  TASK_UPDATED,
  type TaskUpdatedData,
  taskRow,
  tasksOf,
  type WsConnection,
} from '../helpers/subscriptions.js';

const HMAC_KEY = 'load-test-webhook-key';

/** Runs `work` over `items` with at most `limit` in flight. */
async function inParallel<T, R>(items: T[], limit: number, work: (item: T, index: number) => Promise<R>) {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const index = next++;
        results[index] = await work(items[index] as T, index);
      }
    }),
  );
  return results;
}

async function createMany(
  stack: Stack,
  users: string[],
  perUser: number,
): Promise<Array<TaskView & { user: string }>> {
  const owners = users.flatMap((user) => Array.from({ length: perUser }, () => user));
  return inParallel(owners, 25, async (user) => {
    const result = await stack.gateway.gql<{ createAvatarTask: CreateResult }>(
      CREATE_TASK,
      { input: sampleInput() },
      user,
    );
    const created = result.data?.createAvatarTask;
    if (!created || !('task' in created)) throw new Error(`create failed: ${JSON.stringify(result)}`);
    return { ...created.task, user };
  });
}

/**
 * Tasks already accepted by kie (WAITING, version 2, with their history), written in two statements:
 * creating 1000 through the API costs seconds of database time that this test is not about.
 */
async function seedWaiting(stack: Stack, users: string[], perUser: number) {
  const now = Date.now();
  const rows = users.flatMap((user) =>
    Array.from({ length: perUser }, (_, index) => ({
      id: randomUUID(),
      userId: user,
      state: 'WAITING' as const,
      model: 'PRO' as const,
      imageUrl: 'https://example.com/face.png',
      audioUrl: 'https://example.com/voice.mp3',
      inputHash: randomBytes(8).toString('hex'),
      callbackSecret: randomBytes(24).toString('base64url'),
      upstreamTaskId: `task_seeded_${randomBytes(8).toString('hex')}`,
      version: 2,
      submitStatus: 'accepted' as const,
      submittedAt: new Date(now),
      createdAt: new Date(now + index),
      updatedAt: new Date(now + index),
    })),
  );
  const { db } = stack.gateway.app.database;
  await db.insert(avatarTasks).values(rows);
  await db.insert(avatarTaskEvents).values(
    rows.flatMap((row) => [
      {
        taskId: row.id,
        version: 1,
        state: 'PENDING' as const,
        source: 'MUTATION' as const,
        at: row.createdAt,
      },
      {
        taskId: row.id,
        version: 2,
        state: 'WAITING' as const,
        source: 'MUTATION' as const,
        at: row.createdAt,
      },
    ]),
  );
  return rows.map((row) => ({ id: encodeGlobalID('AvatarTask', row.id), user: row.userId }));
}

/**
 * One subscriber per task, `perSocket` of them multiplexed on each user's socket, each waiting in its
 * task's snapshot state. kie's callbacks are dropped, so nothing finishes until the test posts them.
 */
async function subscribeAll(stack: Stack, tasks: Array<{ id: string; user: string }>) {
  const sockets = new Map<string, WsConnection>();
  for (const task of tasks) {
    if (!sockets.has(task.user)) sockets.set(task.user, await connectWs(stack.gateway, task.user));
  }
  // All acknowledged before the first subscribe: on PGlite, a thousand snapshot reads can hold the event loop
  // long enough for a socket still waiting to say hello to hit graphql-ws's 3 s connection_init timeout.
  await Promise.all([...sockets.values()].map((socket) => socket.connected));
  const streams = tasks.map((task) =>
    (sockets.get(task.user) as WsConnection).subscribe<TaskUpdatedData>({
      query: TASK_UPDATED,
      variables: { id: task.id },
    }),
  );
  await Promise.all(
    streams.map((stream) => stream.until((received) => received.data.length >= 1, 20_000, 'the snapshot')),
  );
  return { streams, close: () => Promise.all([...sockets.values()].map((socket) => socket.dispose())) };
}

describe.each(databaseKinds())('many subscribers on one instance on %s', (kind) => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack(
      kind,
      { stepMs: 60_000, callbackMode: 'drop' },
      {
        KIE_MAX_CREATES_PER_10S: '100000',
        KIE_WEBHOOK_HMAC_KEY: HMAC_KEY,
        MAX_SUBSCRIPTIONS_PER_SOCKET: '100',
      },
    );
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('delivers each of 1000 concurrent subscribers its own final state exactly once', async () => {
    const users = Array.from({ length: 20 }, () => `user-${randomUUID()}`);
    const tasks = await seedWaiting(stack, users, 50);
    const { streams, close } = await subscribeAll(stack, tasks);
    try {
      expect(streams.every((stream) => tasksOf(stream)[0]?.state === 'WAITING')).toBe(true);
      const rows = await inParallel(tasks, 50, (task) => taskRow(stack.gateway, task.id));
      const posted: number[] = [];
      await inParallel(rows, 50, async (row, index) => {
        posted[index] = performance.now();
        expect(await postSuccessCallback(stack.gateway, row, { hmacKey: HMAC_KEY })).toBe(200);
        // kie may call twice: every tenth task gets a duplicate, which must change nothing.
        if (index % 10 === 0)
          expect(await postSuccessCallback(stack.gateway, row, { hmacKey: HMAC_KEY })).toBe(200);
      });
      await Promise.all(streams.map((stream) => stream.waitForEnd(20_000)));

      streams.forEach((stream, index) => {
        expect(stream.ending).toEqual({ kind: 'complete' });
        const updates = tasksOf(stream);
        expect(updates.every((update) => update.id === tasks[index]?.id)).toBe(true);
        expect(updates.map((update) => [update.state, update.version])).toEqual([
          ['WAITING', 2],
          ['SUCCEEDED', 3],
        ]);
      });
      const delays = streams.map(
        (stream, index) => (stream.arrivals.at(-1) as number) - (posted[index] as number),
      );
      console.log(
        `[${kind}] 1000 subscribers, 50 callbacks in flight: callback → subscriber p50 ${percentile(delays, 50).toFixed(1)} ms, p99 ${percentile(delays, 99).toFixed(1)} ms`,
      );
    } finally {
      await close();
    }
  }, 60_000);

  it('measures the delay from a callback to the subscriber, one callback at a time', async () => {
    const users = Array.from({ length: 4 }, () => `user-${randomUUID()}`);
    const tasks = await createMany(stack, users, 50);
    const { streams, close } = await subscribeAll(stack, tasks);
    try {
      const rows = await inParallel(tasks, 50, (task) => taskRow(stack.gateway, task.id));
      const delays: number[] = [];
      for (const [index, row] of rows.entries()) {
        const stream = streams[index] as Received<TaskUpdatedData>;
        const postedAt = performance.now();
        expect(await postSuccessCallback(stack.gateway, row, { hmacKey: HMAC_KEY })).toBe(200);
        await stream.waitForEnd();
        delays.push((stream.arrivals.at(-1) as number) - postedAt);
      }
      expect(streams.every((stream) => tasksOf(stream).at(-1)?.state === 'SUCCEEDED')).toBe(true);
      const [p50, p99] = [percentile(delays, 50), percentile(delays, 99)];
      console.log(
        `[${kind}] callback → subscriber over 200 tasks: p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, max ${Math.max(...delays).toFixed(1)} ms`,
      );
      // Only a sanity bound: a live update takes milliseconds, not seconds.
      expect(p50).toBeLessThan(1_000);
    } finally {
      await close();
    }
  });
});
