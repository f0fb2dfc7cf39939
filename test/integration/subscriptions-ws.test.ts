import { randomUUID } from 'node:crypto';
import { decodeGlobalID, encodeGlobalID } from '@pothos/plugin-relay';
import { decodeJwt, SignJWT } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, databaseKinds } from '../helpers/database.js';
import {
  createTaskOk,
  getTask,
  metric,
  sampleInput,
  signToken,
  startTestGateway,
  TEST_JWT_SECRET,
} from '../helpers/gateway.js';
import {
  connectWs,
  pendingTaskId,
  type Stack,
  startStack,
  TASK_UPDATED,
  type TaskUpdatedData,
  tasksOf,
  type UpdatedTask,
  type WsConnection,
} from '../helpers/subscriptions.js';

const user = () => `user-${randomUUID()}`;

const sockets: WsConnection[] = [];
async function connect(...args: Parameters<typeof connectWs>): Promise<WsConnection> {
  const socket = await connectWs(...args);
  sockets.push(socket);
  return socket;
}

/** What every by-id subscription must show: strictly increasing versions, the history, SUCCEEDED last. */
function expectWholeHistory(received: UpdatedTask[], firstVersion: number) {
  const last = received.at(-1);
  expect(last?.state).toBe('SUCCEEDED');
  expect(last?.videoUrl).toMatch(/^https?:\/\//);
  const versions = received.map((task) => task.version);
  expect(versions[0]).toBe(firstVersion);
  // Every version the task went through from the snapshot on, each once, in order: nothing missed, no dupes.
  const history = last?.events ?? [];
  expect(versions).toEqual(
    history.map((event) => event.version).filter((version) => version >= firstVersion),
  );
  expect(received.map((task) => task.state)).toEqual(
    history.filter((event) => event.version >= firstVersion).map((event) => event.state),
  );
}

describe.each(databaseKinds())('avatarTaskUpdated over graphql-ws on %s', (kind) => {
  // Two gateways with their own databases. `viaCallback`: the poller waits a minute, so results come from
  // kie's callback. `viaPoller`: every callback is dropped and the poller looks every few hundred ms, so
  // each of kie's states (800 ms apiece) is observed by a poll. On both, kie answers createTask 500 ms late,
  // which leaves a test the time to subscribe while the task is still PENDING (see pendingTaskId).
  let viaCallback: Stack;
  let viaPoller: Stack;

  beforeAll(async () => {
    [viaCallback, viaPoller] = await Promise.all([
      startStack(kind, { stepMs: 400, createDelayMs: 500 }, { MAX_SUBSCRIPTIONS_PER_SOCKET: '3' }),
      startStack(
        kind,
        { stepMs: 800, createDelayMs: 500, callbackMode: 'drop' },
        { POLL_MIN_DELAY_MS: '100', MAX_SOCKETS_PER_USER: '2' },
      ),
    ]);
  });
  afterAll(async () => {
    await Promise.all([viaCallback?.stop(), viaPoller?.stop()]);
  });
  // A failed assertion must not leave a socket (and its subscriptions) open for the next test.
  afterEach(async () => {
    await Promise.all(sockets.splice(0).map((socket) => socket.dispose()));
  });

  it('streams a task from PENDING to SUCCEEDED through the callback, then completes', async () => {
    const { gateway } = viaCallback;
    const alice = user();
    const creating = createTaskOk(gateway, sampleInput(), alice);
    const id = await pendingTaskId(gateway, alice);
    const socket = await connect(gateway, alice);
    const received = socket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED, variables: { id } });
    await creating;

    expect(await received.waitForEnd()).toEqual({ kind: 'complete' });
    expect(received.errors).toEqual([]);
    const tasks = tasksOf(received);
    expect(tasks.map((task) => task.state)).toEqual(['PENDING', 'WAITING', 'SUCCEEDED']);
    expectWholeHistory(tasks, 1);
    expect(tasks.at(-1)?.events.at(-1)?.source).toBe('CALLBACK');
    await socket.dispose();
  });

  it('streams every state observed by the poller when every callback is dropped', async () => {
    const { gateway, kie } = viaPoller;
    const alice = user();
    const creating = createTaskOk(gateway, sampleInput(), alice);
    const id = await pendingTaskId(gateway, alice);
    const socket = await connect(gateway, alice);
    const received = socket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED, variables: { id } });
    await creating;

    expect(await received.waitForEnd(15_000)).toEqual({ kind: 'complete' });
    const tasks = tasksOf(received);
    expect(tasks.map((task) => task.state)).toEqual([
      'PENDING',
      'WAITING',
      'QUEUING',
      'GENERATING',
      'SUCCEEDED',
    ]);
    expectWholeHistory(tasks, 1);
    expect(
      tasks
        .at(-1)
        ?.events.slice(2)
        .map((event) => event.source),
    ).toEqual(['POLLER', 'POLLER', 'POLLER']);
    expect(kie.simulator.stats.callbacksSent).toBe(0);
    await socket.dispose();
  });

  it('starts from the current state for a task that is already under way, and ends at once if finished', async () => {
    const { gateway } = viaCallback;
    const alice = user();
    const task = await createTaskOk(gateway, sampleInput(), alice);
    const socket = await connect(gateway, alice);
    const live = socket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED, variables: { id: task.id } });
    expect(await live.waitForEnd()).toEqual({ kind: 'complete' });
    // Usually WAITING (version 2), SUCCEEDED if this machine is slow enough: either way, from there on.
    const first = tasksOf(live)[0]?.version ?? 0;
    expect(first).toBeGreaterThanOrEqual(task.version);
    expectWholeHistory(tasksOf(live), first);

    // Finished: one payload, the terminal state, then completion.
    const finished = socket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED, variables: { id: task.id } });
    expect(await finished.waitForEnd()).toEqual({ kind: 'complete' });
    expect(tasksOf(finished).map((update) => [update.state, update.version])).toEqual([
      ['SUCCEEDED', tasksOf(live).at(-1)?.version],
    ]);
    await socket.dispose();
  });

  it("answers another user's task exactly like a task that does not exist: one NOT_FOUND, then the end", async () => {
    const { gateway } = viaCallback;
    const [alice, mallory] = [user(), user()];
    const creating = createTaskOk(gateway, sampleInput(), alice);
    const id = await pendingTaskId(gateway, alice);
    const socket = await connect(gateway, mallory);
    const notFound = async (taskId: string) => {
      const received = socket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED, variables: { id: taskId } });
      expect(await received.waitForEnd()).toEqual({ kind: 'complete' });
      return received.results;
    };

    const foreign = await notFound(id);
    expect(foreign).toHaveLength(1);
    expect(foreign[0]?.data ?? null).toBeNull();
    expect(foreign[0]?.errors?.map((error) => error.extensions?.code)).toEqual(['NOT_FOUND']);
    // Byte for byte what an unknown task id, a non-task id and garbage get: nothing tells them apart.
    expect(await notFound(encodeGlobalID('AvatarTask', randomUUID()))).toEqual(foreign);
    expect(await notFound(encodeGlobalID('Viewer', alice))).toEqual(foreign);
    expect(await notFound('not-an-id')).toEqual(foreign);

    // The task itself went on to finish, and mallory's socket heard nothing of it.
    await creating;
    const owner = await connect(gateway, alice);
    const aliceView = owner.subscribe<TaskUpdatedData>({ query: TASK_UPDATED, variables: { id } });
    await aliceView.waitForEnd();
    expect(tasksOf(aliceView).at(-1)?.state).toBe('SUCCEEDED');
    expect(await notFound(id)).toEqual(foreign);
    await Promise.all([socket.dispose(), owner.dispose()]);
  });

  it("streams every change to the viewer's own tasks, and none of anyone else's, without an id", async () => {
    const { gateway } = viaCallback;
    const [alice, bob] = [user(), user()];
    const [aliceSocket, bobSocket] = await Promise.all([connect(gateway, alice), connect(gateway, bob)]);
    const aliceStream = aliceSocket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED });
    const bobStream = bobSocket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED });
    // graphql-ws gives no "subscribed" signal; a query on the same socket answers after the subscribe ran.
    await Promise.all([aliceSocket.query('{ viewer { id } }'), bobSocket.query('{ viewer { id } }')]);

    const aliceTasks = await Promise.all([
      createTaskOk(gateway, sampleInput(), alice),
      createTaskOk(gateway, sampleInput(), alice),
    ]);
    const bobTask = await createTaskOk(gateway, sampleInput(), bob);
    const finished = (stream: typeof aliceStream, count: number) =>
      stream.until(
        (received) => tasksOf(received).filter((task) => task.state === 'SUCCEEDED').length === count,
        10_000,
        `${count} finished tasks`,
      );
    await Promise.all([finished(aliceStream, 2), finished(bobStream, 1)]);

    const aliceIds = new Set(aliceTasks.map((task) => task.id));
    expect(new Set(tasksOf(aliceStream).map((task) => task.id))).toEqual(aliceIds);
    expect(new Set(tasksOf(bobStream).map((task) => task.id))).toEqual(new Set([bobTask.id]));
    for (const id of aliceIds) {
      const updates = tasksOf(aliceStream).filter((task) => task.id === id);
      // Subscribed before the task existed: every version from PENDING on, once each.
      expect(updates.map((task) => task.version)).toEqual([1, 2, 3]);
      expect(updates.map((task) => task.state)).toEqual(['PENDING', 'WAITING', 'SUCCEEDED']);
    }
    // A user-wide stream stays open for the next task.
    expect(aliceStream.ending).toBeUndefined();
    await Promise.all([aliceSocket.dispose(), bobSocket.dispose()]);
  });

  it('replays exactly the tasks changed after `since`, oldest first, then goes live', async () => {
    const { gateway } = viaCallback;
    const alice = user();
    const waitFinished = async (id: string) => {
      const socket = await connect(gateway, alice);
      const received = socket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED, variables: { id } });
      await received.waitForEnd();
      await socket.dispose();
      return tasksOf(received).at(-1) as UpdatedTask;
    };
    const before = await createTaskOk(gateway, sampleInput(), alice);
    const beforeDone = await waitFinished(before.id);
    // The instant is the old task's last change itself: `since` is exclusive.
    const since = beforeDone.updatedAt;
    await new Promise((resolve) => setTimeout(resolve, 5));
    const changed = await Promise.all([
      createTaskOk(gateway, sampleInput(), alice),
      createTaskOk(gateway, sampleInput(), alice),
      createTaskOk(gateway, sampleInput(), alice),
    ]);
    const changedDone = await Promise.all(changed.map((task) => waitFinished(task.id)));
    // Ties within a millisecond go by the task's UUID, as in the database; the global ID sorts otherwise.
    const uuidOf = (task: UpdatedTask) => decodeGlobalID(task.id).id;
    const oldestFirst = [...changedDone].sort(
      (a, b) => Date.parse(a.updatedAt) - Date.parse(b.updatedAt) || (uuidOf(a) < uuidOf(b) ? -1 : 1),
    );

    const socket = await connect(gateway, alice);
    const stream = socket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED, variables: { since } });
    await stream.until((received) => received.data.length >= 3, 10_000, 'the replay');
    const replay = tasksOf(stream);
    expect(replay.map((task) => [task.id, task.state, task.version])).toEqual(
      oldestFirst.map((task) => [task.id, 'SUCCEEDED', task.version]),
    );

    const live = await createTaskOk(gateway, sampleInput(), alice);
    await stream.until(
      (received) => tasksOf(received).some((task) => task.id === live.id && task.state === 'SUCCEEDED'),
      10_000,
      'the live task to finish',
    );
    const afterReplay = tasksOf(stream).slice(3);
    expect(afterReplay.every((task) => task.id === live.id)).toBe(true);
    // Subscribed before it existed: the live task from PENDING on.
    expect(afterReplay.map((task) => task.state)).toEqual(['PENDING', 'WAITING', 'SUCCEEDED']);
    expect(tasksOf(stream).some((task) => task.id === before.id)).toBe(false);
    await socket.dispose();
  });

  it('closes a socket without a valid token with 4403 at connection_init', async () => {
    const { gateway } = viaCallback;
    const wrongSecret = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('alice')
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode('another-secret-0123456789-abcdefghijklmnop'));
    const expired = await signToken('alice', Math.floor(Date.now() / 1000) - 60);
    const noSub = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode(TEST_JWT_SECRET));
    for (const auth of [
      null,
      { token: 'not-a-jwt' },
      { token: wrongSecret },
      { token: expired },
      { token: noSub },
    ]) {
      const socket = await connect(gateway, auth);
      const received = socket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED });
      expect(await socket.closed).toEqual({ code: 4403, reason: 'Forbidden' });
      const ending = await received.waitForEnd();
      expect(ending.kind).toBe('error');
      expect(received.results).toEqual([]);
      await socket.dispose();
    }
  });

  it('closes a socket with 4403 when its token expires, ending its subscriptions', async () => {
    const { gateway } = viaCallback;
    const alice = user();
    const token = await signToken(alice, '3s');
    const expiresAtMs = (decodeJwt(token).exp as number) * 1000;
    const socket = await connect(gateway, { token });
    await socket.connected;
    const stream = socket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED });
    await socket.query('{ viewer { id } }');
    const task = await createTaskOk(gateway, sampleInput(), alice);
    await stream.until((received) => tasksOf(received).some((update) => update.id === task.id));

    const closed = await socket.closed;
    const closedAt = Date.now();
    expect(closed).toEqual({ code: 4403, reason: 'Token expired' });
    expect(closedAt).toBeGreaterThanOrEqual(expiresAtMs - 50);
    expect(closedAt).toBeLessThan(expiresAtMs + 5_000);
    expect((await stream.waitForEnd()).kind).toBe('error');
    await socket.dispose();
  });

  it('keeps a socket open whose token lasts longer than a timer can count (a 30-day development token)', async () => {
    const { gateway } = viaCallback;
    const alice = user();
    const socket = await connect(gateway, { token: await signToken(alice, '30d') });
    await socket.connected;
    const task = await createTaskOk(gateway, sampleInput(), alice);
    const received = socket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED, variables: { id: task.id } });
    expect(await received.waitForEnd()).toEqual({ kind: 'complete' });
    expect(tasksOf(received).at(-1)?.state).toBe('SUCCEEDED');
    expect(await socket.query<{ viewer: { id: string } }>('{ viewer { id } }')).toEqual({
      viewer: { id: alice },
    });
  });

  it('refuses the operation past MAX_SUBSCRIPTIONS_PER_SOCKET and keeps the others running', async () => {
    const { gateway } = viaCallback;
    const alice = user();
    const socket = await connect(gateway, alice);
    const streams = [1, 2, 3].map(() => socket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED }));
    const refused = socket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED });
    const ending = await refused.waitForEnd();
    expect(ending.kind).toBe('error');
    const errors = (ending as { error: Array<{ extensions?: { code?: string } }> }).error;
    expect(errors.map((error) => error.extensions?.code)).toEqual(['TOO_MANY_SUBSCRIPTIONS']);

    // The three admitted ones still hear changes; the socket is still open.
    const task = await createTaskOk(gateway, sampleInput(), alice);
    for (const stream of streams) {
      await stream.until((received) => tasksOf(received).some((update) => update.state === 'SUCCEEDED'));
      expect(tasksOf(stream).every((update) => update.id === task.id)).toBe(true);
    }
    // A freed slot is usable again.
    streams[0]?.stop();
    await expect
      .poll(async () => {
        const next = socket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED, variables: { id: task.id } });
        await next.waitForEnd();
        return next.errors.length === 0 && tasksOf(next).at(-1)?.state;
      })
      .toBe('SUCCEEDED');
    await socket.dispose();
  });

  it('closes a socket past MAX_SOCKETS_PER_USER with 4429, and admits one again once a socket closed', async () => {
    const { gateway } = viaPoller;
    const [alice, bob] = [user(), user()];
    const [first, second] = [await connect(gateway, alice), await connect(gateway, alice)];
    await Promise.all([first.connected, second.connected]);
    const third = await connect(gateway, alice);
    expect(await third.closed).toEqual({ code: 4429, reason: 'Too many open sockets for this user' });
    // The limit is per user: bob is not affected.
    const bobs = await connect(gateway, bob);
    expect(await bobs.query<{ viewer: { id: string } }>('{ viewer { id } }')).toEqual({
      viewer: { id: bob },
    });

    await first.dispose();
    await expect
      .poll(async () => {
        const again = await connect(gateway, alice);
        return Promise.race([
          again.connected.then(() => 'connected'),
          again.closed.then((close) => close.code),
        ]);
      })
      .toBe('connected');
    expect(await second.query<{ viewer: { id: string } }>('{ viewer { id } }')).toEqual({
      viewer: { id: alice },
    });
  });

  it('leaves no subscription behind once its clients are gone', async () => {
    const { gateway } = viaCallback;
    const alice = user();
    const socket = await connect(gateway, alice);
    // Two, and the query makes three: this gateway allows three operations per socket.
    for (let i = 0; i < 2; i++) socket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED });
    await socket.query('{ viewer { id } }');
    const gauge = () => metric(gateway, 'avatar_gateway_active_subscriptions');
    // The two streams; the query has come and gone.
    expect(await gauge()).toBe(2);
    await socket.dispose();
    await expect.poll(gauge, { timeout: 5_000 }).toBe(0);
    // The gateway is still fine afterwards.
    expect(
      (await getTask(gateway, (await createTaskOk(gateway, sampleInput(), alice)).id, alice))?.id,
    ).toBeDefined();
  });
});

describe('MAX_SUBSCRIPTIONS_PER_SOCKET', () => {
  it('defaults to 50 per socket', async () => {
    const database = await createTestDatabase('pglite');
    const gateway = await startTestGateway({ database });
    try {
      const socket = await connect(gateway, user());
      const streams = Array.from({ length: 50 }, () =>
        socket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED }),
      );
      const refused = socket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED });
      expect((await refused.waitForEnd()).kind).toBe('error');
      expect(streams.every((stream) => stream.ending === undefined)).toBe(true);
      await socket.dispose();
    } finally {
      await gateway.stop();
      await database.dispose();
    }
  });
});
