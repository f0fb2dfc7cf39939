import { randomUUID } from 'node:crypto';
import { encodeGlobalID } from '@pothos/plugin-relay';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { databaseKinds } from '../helpers/database.js';
import { createTaskOk, metric, sampleInput, signToken } from '../helpers/gateway.js';
import {
  type FetchSseReceived,
  pendingTaskId,
  type Received,
  type Stack,
  startStack,
  subscribeFetchSse,
  subscribeGraphqlSse,
  TASK_UPDATED,
  type TaskUpdatedData,
  tasksOf,
} from '../helpers/subscriptions.js';

const user = () => `user-${randomUUID()}`;

type Transport = 'fetch' | 'graphql-sse';
const transports: Transport[] = ['fetch', 'graphql-sse'];

const open: Array<Received<TaskUpdatedData>> = [];

/** One SSE subscription: a plain fetch of text/event-stream on /graphql, or graphql-sse's client. */
async function subscribe(
  transport: Transport,
  stack: Stack,
  auth: string | { token: string } | null,
  variables: Record<string, unknown>,
): Promise<Received<TaskUpdatedData>> {
  const operation = { query: TASK_UPDATED, variables };
  const received =
    transport === 'fetch'
      ? await subscribeFetchSse<TaskUpdatedData>(stack.gateway, auth, operation)
      : await subscribeGraphqlSse<TaskUpdatedData>(stack.gateway, auth, operation);
  open.push(received);
  return received;
}

describe.each(databaseKinds())('avatarTaskUpdated over SSE on %s', (kind) => {
  // As in the graphql-ws tests: one gateway finishes tasks through kie's callback, the other with every
  // callback dropped, so the poller observes each of kie's states.
  let viaCallback: Stack;
  let viaPoller: Stack;

  beforeAll(async () => {
    [viaCallback, viaPoller] = await Promise.all([
      startStack(kind, { stepMs: 400, createDelayMs: 500 }),
      startStack(
        kind,
        { stepMs: 800, createDelayMs: 500, callbackMode: 'drop' },
        { POLL_MIN_DELAY_MS: '100' },
      ),
    ]);
  });
  afterAll(async () => {
    await Promise.all([viaCallback?.stop(), viaPoller?.stop()]);
  });
  afterEach(() => {
    for (const received of open.splice(0)) received.stop();
  });

  describe.each(transports)('with %s', (transport) => {
    it('streams a task from PENDING to SUCCEEDED through the callback, then completes', async () => {
      const alice = user();
      const creating = createTaskOk(viaCallback.gateway, sampleInput(), alice);
      const id = await pendingTaskId(viaCallback.gateway, alice);
      const received = await subscribe(transport, viaCallback, alice, { id });
      await creating;

      expect(await received.waitForEnd()).toEqual({ kind: 'complete' });
      expect(received.errors).toEqual([]);
      const tasks = tasksOf(received);
      expect(tasks.map((task) => [task.state, task.version])).toEqual([
        ['PENDING', 1],
        ['WAITING', 2],
        ['SUCCEEDED', 3],
      ]);
      expect(tasks.at(-1)?.events.map((event) => [event.version, event.source])).toEqual([
        [1, 'MUTATION'],
        [2, 'MUTATION'],
        [3, 'CALLBACK'],
      ]);
      if (transport === 'fetch') {
        // The distinct-connections stream: one event per state, then `complete`, then the end.
        expect((received as FetchSseReceived<TaskUpdatedData>).eventNames).toEqual([
          'next',
          'next',
          'next',
          'complete',
        ]);
      }
    });

    it('streams every state observed by the poller when every callback is dropped', async () => {
      const alice = user();
      const creating = createTaskOk(viaPoller.gateway, sampleInput(), alice);
      const id = await pendingTaskId(viaPoller.gateway, alice);
      const received = await subscribe(transport, viaPoller, alice, { id });
      await creating;

      expect(await received.waitForEnd(15_000)).toEqual({ kind: 'complete' });
      const tasks = tasksOf(received);
      expect(tasks.map((task) => [task.state, task.version])).toEqual([
        ['PENDING', 1],
        ['WAITING', 2],
        ['QUEUING', 3],
        ['GENERATING', 4],
        ['SUCCEEDED', 5],
      ]);
      expect(tasks.at(-1)?.events.map((event) => event.version)).toEqual([1, 2, 3, 4, 5]);
      expect(tasks.at(-1)?.events.at(-1)?.source).toBe('POLLER');
    });

    it('completes after FAILED as after SUCCEEDED', async () => {
      const alice = user();
      const task = await createTaskOk(viaCallback.gateway, sampleInput({ prompt: 'please [fail]' }), alice);
      const received = await subscribe(transport, viaCallback, alice, { id: task.id });
      expect(await received.waitForEnd()).toEqual({ kind: 'complete' });
      const last = tasksOf(received).at(-1);
      expect(last?.state).toBe('FAILED');
      expect(last?.failure?.code).toBe('GENERATION_FAILED');
      const first = tasksOf(received)[0]?.version ?? 0;
      expect(tasksOf(received).map((update) => update.version)).toEqual(
        last?.events.map((event) => event.version).filter((version) => version >= first),
      );
    });

    it("answers another user's task exactly like an unknown one: one NOT_FOUND, then the end", async () => {
      const [alice, mallory] = [user(), user()];
      const task = await createTaskOk(viaCallback.gateway, sampleInput(), alice);
      const notFound = async (id: string) => {
        const received = await subscribe(transport, viaCallback, mallory, { id });
        expect(await received.waitForEnd()).toEqual({ kind: 'complete' });
        if (transport === 'fetch') {
          const fetched = received as FetchSseReceived<TaskUpdatedData>;
          expect(await fetched.response).toMatchObject({ status: 200, contentType: 'text/event-stream' });
          expect(fetched.eventNames).toEqual(['next', 'complete']);
        }
        return received.results;
      };
      const foreign = await notFound(task.id);
      expect(foreign).toHaveLength(1);
      expect(foreign[0]?.data ?? null).toBeNull();
      expect(foreign[0]?.errors?.map((error) => error.extensions?.code)).toEqual(['NOT_FOUND']);
      expect(await notFound(encodeGlobalID('AvatarTask', randomUUID()))).toEqual(foreign);
      expect(await notFound('not-an-id')).toEqual(foreign);
    });

    it('refuses a subscription without a valid token, before anything runs', async () => {
      const task = await createTaskOk(viaCallback.gateway, sampleInput(), user());
      for (const auth of [null, { token: 'not-a-jwt' }]) {
        const received = await subscribe(transport, viaCallback, auth, { id: task.id });
        const ending = await received.waitForEnd();
        expect(received.data.filter((data) => data.avatarTaskUpdated)).toEqual([]);
        if (transport === 'fetch') {
          expect((await (received as FetchSseReceived<TaskUpdatedData>).response).status).toBe(401);
          expect(received.errors.map((error) => error.extensions?.code)).toEqual(['UNAUTHENTICATED']);
        } else {
          // A missing token and one that fails verification alike: refused with 401 before the stream opens.
          expect(ending.kind).toBe('error');
          expect(String((ending as { error: unknown }).error)).toMatch(/401/);
        }
      }
    });
  });

  it("streams only the viewer's tasks without an id, after replaying `since` (GET over SSE)", async () => {
    const [alice, bob] = [user(), user()];
    const gateway = viaCallback.gateway;
    const old = await createTaskOk(gateway, sampleInput(), alice);
    await createTaskOk(gateway, sampleInput(), bob);
    const received = await subscribeFetchSse<TaskUpdatedData>(
      gateway,
      alice,
      { query: TASK_UPDATED, variables: { since: new Date(Date.now() - 60_000).toISOString() } },
      'GET',
    );
    open.push(received);
    // The replay proves the stream is live: the listener is registered before the replay is read.
    await received.until(
      (stream) => tasksOf(stream).some((task) => task.id === old.id),
      10_000,
      'the replay',
    );

    const [mine, theirs] = await Promise.all([
      createTaskOk(gateway, sampleInput(), alice),
      createTaskOk(gateway, sampleInput(), bob),
    ]);
    await received.until(
      (stream) => tasksOf(stream).some((task) => task.id === mine.id && task.state === 'SUCCEEDED'),
      10_000,
      'the new task to finish',
    );
    const ids = new Set(tasksOf(received).map((task) => task.id));
    expect(ids.has(theirs.id)).toBe(false);
    expect(ids).toEqual(new Set([old.id, mine.id]));
    expect(
      tasksOf(received)
        .filter((task) => task.id === mine.id)
        .map((task) => task.state),
    ).toEqual(['PENDING', 'WAITING', 'SUCCEEDED']);
    expect(received.ending).toBeUndefined();
  });

  // Outside production, with CORS_ORIGINS unset, pages on localhost may call the gateway (without credentials).
  it('answers a browser on another origin with the same CORS headers on a stream as on a JSON request', async () => {
    const { gateway } = viaCallback;
    const alice = user();
    const task = await createTaskOk(gateway, sampleInput(), alice);
    const headers = {
      authorization: `Bearer ${await signToken(alice)}`,
      origin: 'http://localhost:3000',
      'content-type': 'application/json',
    };
    const cors = (response: Response) =>
      Object.fromEntries(
        [...response.headers].filter(([name]) => name.startsWith('access-control-') || name === 'vary'),
      );
    const json = await fetch(gateway.graphqlUrl, {
      method: 'POST',
      headers: { ...headers, accept: 'application/json' },
      body: JSON.stringify({ query: '{ __typename }' }),
    });
    await json.arrayBuffer();
    const abort = new AbortController();
    const stream = await fetch(gateway.graphqlUrl, {
      method: 'POST',
      headers: { ...headers, accept: 'text/event-stream' },
      body: JSON.stringify({ query: TASK_UPDATED, variables: { id: task.id } }),
      signal: abort.signal,
    });
    expect(stream.headers.get('content-type')).toBe('text/event-stream');
    expect(cors(json)).toMatchObject({ 'access-control-allow-origin': 'http://localhost:3000' });
    expect(cors(json)['access-control-allow-credentials']).toBeUndefined();
    expect(cors(stream)).toEqual(cors(json));
    abort.abort();
  });

  it('counts SSE streams in avatar_gateway_active_subscriptions and forgets them when clients leave', async () => {
    const { gateway } = viaCallback;
    const gauge = () => metric(gateway, 'avatar_gateway_active_subscriptions');
    // Earlier tests' streams are gone too.
    await expect.poll(gauge, { timeout: 5_000 }).toBe(0);
    const alice = user();
    const streams = await Promise.all([
      subscribe('fetch', viaCallback, alice, {}),
      subscribe('fetch', viaCallback, alice, {}),
      subscribe('graphql-sse', viaCallback, alice, {}),
    ]);
    await expect.poll(gauge, { timeout: 5_000 }).toBe(3);
    for (const stream of streams) stream.stop();
    await expect.poll(gauge, { timeout: 5_000 }).toBe(0);
  });
});
