import { randomBytes, randomUUID } from 'node:crypto';
import { inArray } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/connection.js';
import { type AvatarTaskRow, avatarTasks } from '../../src/db/schema.js';
import { InProcessEventBus } from '../../src/events/bus.js';
import { SignalDispatcher } from '../../src/events/dispatcher.js';
import { TaskRepository } from '../../src/tasks/repository.js';
import type { AvatarTaskState } from '../../src/tasks/states.js';
import { TaskUpdates } from '../../src/tasks/updates.js';
import { createTestDatabase, databaseKinds, type TestDatabase } from '../helpers/database.js';

/**
 * The server side of avatarTaskUpdated, driven directly: a consumer that stops pulling stands for a client
 * that cannot keep up (graphql-ws and yoga pull the next value only once the previous one was written out),
 * which a real socket cannot show deterministically, as kernel buffers absorb small payloads.
 */
describe.each(databaseKinds())('task streams on %s', (kind) => {
  let database: TestDatabase;
  let handle: DatabaseHandle;
  let repository: TaskRepository;
  let bus: InProcessEventBus;
  let updates: TaskUpdates;

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    handle = await database.open();
    await handle.migrate();
    repository = new TaskRepository(handle.db);
    bus = new InProcessEventBus();
    updates = new TaskUpdates(repository, new SignalDispatcher(bus));
  });
  afterAll(async () => {
    await bus?.close();
    await handle?.close();
    await database?.dispose();
  });

  async function insertTask(userId: string): Promise<AvatarTaskRow> {
    const row = await repository.insert(
      {
        id: randomUUID(),
        userId,
        model: 'PRO',
        imageUrl: 'https://example.com/face.png',
        audioUrl: 'https://example.com/voice.mp3',
        prompt: null,
        idempotencyKey: null,
        inputHash: randomBytes(8).toString('hex'),
        callbackSecret: randomBytes(24).toString('base64url'),
        nextCheckAt: null,
      },
      new Date(),
    );
    if (!row) throw new Error('insert failed');
    await bus.publish({ taskId: row.id, userId, version: row.version });
    return row;
  }

  /** Commits a change and then signals it, as TaskService does. */
  async function advance(task: AvatarTaskRow, state: AvatarTaskState): Promise<AvatarTaskRow> {
    const target =
      state === 'SUCCEEDED' ? { state, resultUrls: [`https://cdn.example.com/${task.id}.mp4`] } : { state };
    const result = await repository.transition(task.id, 'POLLER', () => ({ target }));
    if (!result?.changed) throw new Error(`${task.id} did not move to ${state}`);
    await bus.publish({ taskId: task.id, userId: task.userId, version: result.task.version });
    return result.task;
  }

  const toTheEnd: AvatarTaskState[] = ['WAITING', 'QUEUING', 'GENERATING', 'SUCCEEDED'];

  it('gives a consumer that stopped pulling the latest state, not every state it missed', async () => {
    const task = await insertTask(`user-${randomUUID()}`);
    const stream = await updates.watchTask(task.userId, task.id);
    const first = await stream.next();
    expect(first.value).toMatchObject({ state: 'PENDING', version: 1 });

    for (const state of toTheEnd) await advance(task, state);

    const rest: AvatarTaskRow[] = [];
    for await (const row of stream) rest.push(row);
    // At most one state read before the consumer went quiet, then the latest; never all four.
    expect(rest.length).toBeLessThanOrEqual(2);
    expect(rest.at(-1)).toMatchObject({ state: 'SUCCEEDED', version: 5 });
    const versions = [1, ...rest.map((row) => row.version)];
    expect(versions).toEqual([...new Set(versions)].sort((a, b) => a - b));
  });

  it("keeps a user-wide stream's backlog to one entry per task, however many changes it missed", async () => {
    const userId = `user-${randomUUID()}`;
    const stream = updates.watchUser(userId);
    // The stream starts on the first pull; a first task gets it going.
    const opener = await insertTask(userId);
    expect((await stream.next()).value).toMatchObject({ id: opener.id, version: 1 });

    const tasks = await Promise.all(Array.from({ length: 25 }, () => insertTask(userId)));
    for (const state of toTheEnd) for (const task of tasks) await advance(task, state);
    // 25 tasks x 5 versions = 125 changes; a queue would hold them all.
    const received: AvatarTaskRow[] = [];
    while (received.filter((row) => row.state === 'SUCCEEDED').length < tasks.length) {
      const next = await stream.next();
      if (next.done) throw new Error('the user-wide stream ended');
      received.push(next.value);
    }
    await stream.return?.(undefined);

    expect(received.length).toBeLessThanOrEqual(tasks.length + 1);
    for (const task of tasks) {
      const versions = received.filter((row) => row.id === task.id).map((row) => row.version);
      expect(versions.at(-1)).toBe(5);
      expect(versions).toEqual([...new Set(versions)].sort((a, b) => a - b));
    }
  });

  it('misses no change committed between listening and reading the snapshot, and repeats none', async () => {
    const task = await insertTask(`user-${randomUUID()}`);
    // A repository whose snapshot read is overtaken by a change: the read returns the old row, and the
    // change commits and signals right after, before the stream has sent anything.
    let raced = false;
    const racing = new (class extends TaskRepository {
      override async findForUser(userId: string, id: string) {
        const row = await super.findForUser(userId, id);
        if (!raced) {
          raced = true;
          await advance(task, 'WAITING');
        }
        return row;
      }
    })(handle.db);
    const stream = await new TaskUpdates(racing, new SignalDispatcher(bus)).watchTask(task.userId, task.id);
    expect((await stream.next()).value).toMatchObject({ state: 'PENDING', version: 1 });
    expect((await stream.next()).value).toMatchObject({ state: 'WAITING', version: 2 });

    // A change already contained in the snapshot is not sent again when its signal arrives late.
    const late = await repository.transition(task.id, 'POLLER', () => ({ target: { state: 'QUEUING' } }));
    const second = await new TaskUpdates(repository, new SignalDispatcher(bus)).watchTask(
      task.userId,
      task.id,
    );
    expect((await second.next()).value).toMatchObject({ state: 'QUEUING', version: 3 });
    await bus.publish({ taskId: task.id, userId: task.userId, version: late?.task.version ?? 0 });
    await advance(task, 'SUCCEEDED');
    const afterSnapshot: AvatarTaskRow[] = [];
    for await (const row of second) afterSnapshot.push(row);
    expect(afterSnapshot.map((row) => row.version)).toEqual([4]);
    await stream.return?.(undefined);
  });

  it("ignores another user's signals for the task and ends when the consumer leaves", async () => {
    const task = await insertTask(`user-${randomUUID()}`);
    await expect(updates.watchTask('someone-else', task.id)).rejects.toThrow(/No such avatar task/);
    const stream = await updates.watchTask(task.userId, task.id);
    expect((await stream.next()).value).toMatchObject({ version: 1 });
    // A forged or foreign signal for this task id changes nothing the stream would send.
    await bus.publish({ taskId: task.id, userId: 'someone-else', version: 99 });
    const pending = stream.next();
    await stream.return?.(undefined);
    expect(await pending).toMatchObject({ done: true });
  });
  /**
   * seen 7 (replay). Limit proved: a `since` replay reads SINCE_REPLAY_PAGE_SIZE tasks at a time, the next
   * page only once the consumer has taken the previous one, never every matching task at once: tasks that
   * stop matching while the consumer holds the first page are never delivered.
   */
  it('replays `since` a page at a time, oldest change first, each task once', async () => {
    const paged = new TaskUpdates(repository, new SignalDispatcher(bus), undefined, { replayPageSize: 10 });
    const userId = `user-${randomUUID()}`;
    const since = new Date(Date.now() - 1_000);
    const tasks: AvatarTaskRow[] = [];
    for (let index = 0; index < 25; index++) tasks.push(await insertTask(userId));

    const everything = paged.watchUser(userId, since);
    const all: string[] = [];
    for (let index = 0; index < 25; index++) all.push(((await everything.next()).value as AvatarTaskRow).id);
    await everything.return?.();
    const oldestFirst = [...tasks].sort(
      (a, b) => a.updatedAt.getTime() - b.updatedAt.getTime() || a.id.localeCompare(b.id),
    );
    expect(all).toEqual(oldestFirst.map((task) => task.id));

    const stream = paged.watchUser(userId, since);
    const first = (await stream.next()).value as AvatarTaskRow;
    expect(first.id).toBe(oldestFirst[0]?.id);
    // Past the first page, every task now belongs to someone else.
    await handle.db
      .update(avatarTasks)
      .set({ userId: `${userId}-moved` })
      .where(
        inArray(
          avatarTasks.id,
          oldestFirst.slice(10).map((task) => task.id),
        ),
      );
    const delivered = [first.id];
    for (;;) {
      const next = await Promise.race([
        stream.next(),
        new Promise<'idle'>((resolve) => setTimeout(() => resolve('idle'), 500)),
      ]);
      if (next === 'idle' || next.done) break;
      delivered.push(next.value.id);
    }
    await stream.return?.();
    expect(delivered).toEqual(oldestFirst.slice(0, 10).map((task) => task.id));
  });

  it('reads the replays of many streams starting at once in one query, each its own tasks since its own `since`', async () => {
    let replayQueries = 0;
    const counting = new (class extends TaskRepository {
      override async listUpdatedSince(...args: Parameters<TaskRepository['listUpdatedSince']>) {
        replayQueries++;
        return super.listUpdatedSince(...args);
      }
      override async listUpdatedSinceForMany(...args: Parameters<TaskRepository['listUpdatedSinceForMany']>) {
        replayQueries++;
        return super.listUpdatedSinceForMany(...args);
      }
    })(handle.db);
    const reconnecting = new TaskUpdates(counting, new SignalDispatcher(bus), undefined, {
      replayPageSize: 3,
    });
    // Forty clients coming back at once, as after a restart: two per user, one that saw nothing yet and one
    // that saw the user's first two tasks.
    const users = Array.from({ length: 20 }, () => `user-${randomUUID()}`);
    const tasksOf = new Map<string, AvatarTaskRow[]>();
    for (const userId of users) {
      const tasks = [];
      for (let index = 0; index < 4; index++) {
        tasks.push(await insertTask(userId));
        // Each change at an instant of its own, so that every client has something after its `since`.
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
      tasksOf.set(userId, tasks);
    }
    const oldestFirst = (tasks: AvatarTaskRow[]) =>
      [...tasks].sort((a, b) => a.updatedAt.getTime() - b.updatedAt.getTime() || (a.id < b.id ? -1 : 1));
    const clients = users.flatMap((userId) => {
      const tasks = oldestFirst(tasksOf.get(userId) ?? []);
      const seen = tasks[1] as AvatarTaskRow;
      return [
        { userId, since: new Date(0), expected: tasks },
        { userId, since: seen.updatedAt, expected: tasks.filter((task) => task.updatedAt > seen.updatedAt) },
      ];
    });
    const streams = clients.map((client) => reconnecting.watchUser(client.userId, client.since));
    const firstPages = await Promise.all(streams.map((stream) => stream.next()));
    expect(replayQueries).toBeLessThanOrEqual(2);

    for (const [index, stream] of streams.entries()) {
      const expected = clients[index]?.expected.map((task) => task.id);
      const received = [(firstPages[index] as IteratorResult<AvatarTaskRow>).value.id];
      while (received.length < (expected?.length ?? 0)) received.push((await stream.next()).value.id);
      expect(received).toEqual(expected);
    }
    await Promise.all(streams.map((stream) => stream.return?.()));
  });

  it('has the replays of streams that start one by one while a replay query is out wait, and read them in one query', async () => {
    // A slow database: each replay query takes 100 ms, far longer than the turns of the event loop between
    // requests. Reconnecting SSE clients arrive so, one request at a time.
    let replayQueries = 0;
    const slow = new (class extends TaskRepository {
      override async listUpdatedSinceForMany(...args: Parameters<TaskRepository['listUpdatedSinceForMany']>) {
        replayQueries++;
        await new Promise((resolve) => setTimeout(resolve, 100));
        return super.listUpdatedSinceForMany(...args);
      }
    })(handle.db);
    const reconnecting = new TaskUpdates(slow, new SignalDispatcher(bus));
    const users = Array.from({ length: 10 }, () => `user-${randomUUID()}`);
    const ownTask = new Map<string, string>();
    for (const userId of users) ownTask.set(userId, (await insertTask(userId)).id);
    const streams = [];
    const firstPages = [];
    for (const userId of users) {
      const stream = reconnecting.watchUser(userId, new Date(0));
      streams.push(stream);
      firstPages.push(stream.next());
      await new Promise((resolve) => setImmediate(resolve));
    }
    const pages = await Promise.all(firstPages);
    // The first stream's query, then one for the nine that came while it was out (it was five: four queries
    // were let out whenever a page waited).
    expect(replayQueries).toBe(2);
    expect(pages.map((page) => (page as IteratorResult<AvatarTaskRow>).value.id)).toEqual(
      users.map((userId) => ownTask.get(userId)),
    );
    await Promise.all(streams.map((stream) => stream.return?.()));
  });
});
