/**
 * The live-updates baseline: kie callbacks in over node:http, task updates out over a raw `ws` server (speaking
 * just enough graphql-transport-ws for the graphql-ws client) and over raw text/event-stream, with no GraphQL
 * and no ORM.
 *
 * With DATABASE_URL it does the gateway's database work by hand: the callback checks the per-task secret and
 * the HMAC, runs the same transition transaction and NOTIFY; a LISTEN handler re-reads the row and sends it.
 * Without DATABASE_URL it is the transport floor: a callback's state goes straight to the subscriber's socket.
 * With nobody subscribed, it is also the callbacks scenario's baseline.
 *
 * A subscription without `id` follows every task of its user, as the gateway's per-user stream: with `since`,
 * first the user's tasks changed after that instant (the same keyset query, page by page), then live changes.
 * PORT pins the port, so the reconnect-storm scenario can kill this process and start it again where its
 * clients expect it.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import postgres from 'postgres';
import { type WebSocket, WebSocketServer } from 'ws';
import { isTerminal, type UpstreamSnapshot, upstreamStates } from '../../src/tasks/states.js';
import { benchEnv, reportFailure, reportReady } from '../lib/child.js';
import {
  Auth,
  decodeGlobalId,
  encodeGlobalId,
  LISTEN_BACKLOG,
  readBody,
  sameSecret,
  sendJson,
  validSignature,
} from './common.js';
import { TASK_CHANNEL, type TaskRow, TaskSql, UpstreamMismatchError } from './sql.js';

type TaskView = Pick<
  TaskRow,
  'id' | 'state' | 'version' | 'result_urls' | 'updated_at' | 'failure_code' | 'failure_message'
>;

interface Subscription {
  globalId: string;
  userId: string;
  sent: number;
  push(json: string): void;
  finish(): void;
}

const env = benchEnv();
const auth = new Auth(env.AUTH_JWT_SECRET ?? '');
const hmacKey = env.KIE_WEBHOOK_HMAC_KEY;
const sql = env.DATABASE_URL ? postgres(env.DATABASE_URL, { max: 10, onnotice: () => {} }) : undefined;
const tasks = sql ? new TaskSql(sql) : undefined;
const byTask = new Map<string, Set<Subscription>>();

/** A subscription to every task of one user: the last version sent per task. */
interface UserFollower {
  userId: string;
  sent: Map<string, number>;
  push(json: string): void;
}

const byUser = new Map<string, Set<UserFollower>>();
/** The gateway's SINCE_REPLAY_PAGE_SIZE default. */
const REPLAY_PAGE_SIZE = 100;

/** The same JSON the gateway sends for `avatarTaskUpdated { id state version videoUrl updatedAt failure { code message } }`. */
function payload(globalId: string, task: TaskView): string {
  return JSON.stringify({
    data: {
      avatarTaskUpdated: {
        id: globalId,
        state: task.state,
        version: task.version,
        videoUrl: task.result_urls[0] ?? null,
        updatedAt: task.updated_at,
        failure:
          task.state === 'FAILED'
            ? { code: task.failure_code ?? 'UNKNOWN', message: task.failure_message ?? '' }
            : null,
      },
    },
  });
}

function deliver(subscription: Subscription, task: TaskView): void {
  if (task.version <= subscription.sent) return;
  subscription.sent = task.version;
  subscription.push(payload(subscription.globalId, task));
  if (isTerminal(task.state)) subscription.finish();
}

function watch(taskId: string, subscription: Subscription): () => void {
  let set = byTask.get(taskId);
  if (!set) {
    set = new Set();
    byTask.set(taskId, set);
  }
  set.add(subscription);
  const own = set;
  return () => {
    own.delete(subscription);
    if (own.size === 0 && byTask.get(taskId) === own) byTask.delete(taskId);
  };
}

function deliverToFollower(follower: UserFollower, task: TaskView): void {
  if (task.version <= (follower.sent.get(task.id) ?? 0)) return;
  follower.sent.set(task.id, task.version);
  follower.push(payload(encodeGlobalId(task.id), task));
}

/**
 * Registers first, then replays what changed after `since` page by page, as the gateway's user stream does,
 * so a change committed during the replay is seen too (and sent once: the versions sent are kept per task).
 */
async function follow(follower: UserFollower, since: Date | undefined): Promise<() => void> {
  let set = byUser.get(follower.userId);
  if (!set) {
    set = new Set();
    byUser.set(follower.userId, set);
  }
  set.add(follower);
  const own = set;
  const unfollow = () => {
    own.delete(follower);
    if (own.size === 0 && byUser.get(follower.userId) === own) byUser.delete(follower.userId);
  };
  if (since && tasks) {
    let cursor: { since: Date; afterId: string | undefined } | undefined = { since, afterId: undefined };
    while (cursor) {
      const page: TaskRow[] = await tasks.listUpdatedSince(
        follower.userId,
        cursor.since,
        cursor.afterId,
        REPLAY_PAGE_SIZE,
      );
      for (const task of page) deliverToFollower(follower, task);
      const last = page.at(-1);
      cursor =
        last && page.length === REPLAY_PAGE_SIZE ? { since: last.updated_at, afterId: last.id } : undefined;
    }
  }
  return unfollow;
}

function sinceOf(variables: { since?: unknown }): Date | undefined {
  if (typeof variables.since !== 'string') return undefined;
  const since = new Date(variables.since);
  return Number.isNaN(since.getTime()) ? undefined : since;
}

/** Registers first, then reads the snapshot, as the gateway does, so a change in between is not missed. */
async function start(taskId: string, subscription: Subscription): Promise<(() => void) | undefined> {
  const unwatch = watch(taskId, subscription);
  const task = tasks
    ? await tasks.findForUser(subscription.userId, taskId)
    : {
        id: taskId,
        state: 'WAITING' as const,
        version: 2,
        result_urls: [],
        updated_at: new Date(),
        failure_code: null,
        failure_message: null,
      };
  if (!task) {
    unwatch();
    return undefined;
  }
  deliver(subscription, task);
  return unwatch;
}

// Transport floor: the last state sent per task, so versions still count up without a database.
const memory = new Map<string, TaskView>();

async function onCallback(req: IncomingMessage, res: ServerResponse, taskId: string, secret: string) {
  let snapshot: UpstreamSnapshot;
  try {
    const data = (JSON.parse(await readBody(req)) as { data?: Record<string, unknown> }).data ?? {};
    const upstreamTaskId = data.taskId ?? data.task_id;
    const state = data.state as UpstreamSnapshot['state'];
    if (typeof upstreamTaskId !== 'string' || !upstreamStates.includes(state))
      throw new Error('not a callback');
    const resultUrls =
      state === 'success'
        ? ((JSON.parse(String(data.resultJson)) as { resultUrls: string[] }).resultUrls ?? [])
        : [];
    snapshot = { upstreamTaskId, state, resultUrls };
  } catch {
    sendJson(res, 400, { ok: false, message: 'body is not a kie callback' });
    return;
  }
  if (!tasks) {
    const previous = memory.get(taskId) ?? {
      id: taskId,
      state: 'WAITING',
      version: 2,
      result_urls: [],
      updated_at: new Date(),
      failure_code: null,
      failure_message: null,
    };
    const state = (
      {
        waiting: 'WAITING',
        queuing: 'QUEUING',
        generating: 'GENERATING',
        success: 'SUCCEEDED',
        fail: 'FAILED',
      } as const
    )[snapshot.state];
    const next: TaskView = {
      ...previous,
      state,
      version: previous.version + 1,
      result_urls: snapshot.resultUrls,
      updated_at: new Date(),
    };
    memory.set(taskId, next);
    for (const subscription of byTask.get(taskId) ?? []) deliver(subscription, next);
    sendJson(res, 200, { ok: true, message: 'applied' });
    return;
  }
  const task = await tasks.findById(taskId);
  if (!task) return sendJson(res, 404, { ok: false, message: 'no such task' });
  if (!sameSecret(secret, task.callback_secret))
    return sendJson(res, 401, { ok: false, message: 'bad callback secret' });
  if (!validSignature(req.headers, snapshot.upstreamTaskId, hmacKey)) {
    return sendJson(res, 401, { ok: false, message: 'bad webhook signature' });
  }
  try {
    const result = await tasks.applySnapshot(task, snapshot);
    if (result?.changed) await tasks.notify(result.row);
    sendJson(res, 200, { ok: true, message: result?.changed ? 'applied' : 'nothing to change' });
  } catch (error) {
    if (error instanceof UpstreamMismatchError)
      return sendJson(res, 401, { ok: false, message: 'another task' });
    sendJson(res, 503, { ok: false, message: 'could not store the callback' });
  }
}

/** Signals from NOTIFY: re-read the row once and send it to every subscriber of the task that has not seen it. */
async function onSignal(raw: string): Promise<void> {
  const signal = JSON.parse(raw) as { taskId: string; userId: string; version: number };
  if (!tasks) return;
  const subscriptions = [...(byTask.get(signal.taskId) ?? [])];
  const followers = [...(byUser.get(signal.userId) ?? [])];
  const behind =
    subscriptions.some((subscription) => subscription.sent < signal.version) ||
    followers.some((follower) => (follower.sent.get(signal.taskId) ?? 0) < signal.version);
  if (!behind) return;
  const task = await tasks.findById(signal.taskId);
  if (!task) return;
  for (const subscription of subscriptions) deliver(subscription, task);
  for (const follower of followers) deliverToFollower(follower, task);
}

async function onSse(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const userId = await auth.userOf(req.headers.authorization);
  if (!userId) return sendJson(res, 401, { errors: [{ message: 'unauthenticated' }] });
  const body = JSON.parse(await readBody(req)) as { variables?: { id?: string; since?: string } };
  res.writeHead(200, {
    'content-type': 'text/event-stream',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
  });
  if (body.variables?.id === undefined) {
    // As the gateway does: a comment at once, so the client sees the stream open before any update.
    res.write(':\n\n');
    let unfollow: (() => void) | undefined;
    let gone = false;
    res.on('close', () => {
      gone = true;
      unfollow?.();
    });
    const follower: UserFollower = {
      userId,
      sent: new Map(),
      push: (json) => res.write(`event: next\ndata: ${json}\n\n`),
    };
    unfollow = await follow(follower, sinceOf(body.variables ?? {}));
    if (gone) unfollow();
    return;
  }
  const taskId = decodeGlobalId(String(body.variables?.id ?? ''));
  const complete = () => {
    if (!res.writableEnded) res.end('event: complete\ndata:\n\n');
  };
  let done = false;
  let unwatch: (() => void) | undefined;
  const subscription: Subscription = {
    globalId: String(body.variables?.id),
    userId,
    sent: 0,
    push: (json) => res.write(`event: next\ndata: ${json}\n\n`),
    finish: () => {
      done = true;
      unwatch?.();
      complete();
    },
  };
  unwatch = taskId ? await start(taskId, subscription) : undefined;
  if (!unwatch) {
    const error = { errors: [{ message: 'No such avatar task', extensions: { code: 'NOT_FOUND' } }] };
    res.write(`event: next\ndata: ${JSON.stringify(error)}\n\n`);
    complete();
    return;
  }
  if (done) unwatch();
  res.on('close', () => unwatch?.());
}

function onSocket(socket: WebSocket): void {
  let userId: string | undefined;
  const operations = new Map<string, () => void>();
  const send = (message: unknown) => socket.send(JSON.stringify(message));
  socket.on('message', async (data) => {
    const message = JSON.parse(String(data)) as {
      type: string;
      id?: string;
      payload?: Record<string, unknown>;
    };
    switch (message.type) {
      case 'connection_init':
        userId = await auth.userOf(String(message.payload?.authorization ?? ''));
        if (userId) send({ type: 'connection_ack' });
        else socket.close(4403, 'Forbidden');
        return;
      case 'ping':
        send({ type: 'pong' });
        return;
      case 'complete':
        operations.get(String(message.id))?.();
        operations.delete(String(message.id));
        return;
      case 'subscribe': {
        if (!userId) return socket.close(4401, 'Unauthorized');
        const id = String(message.id);
        const variables = (message.payload?.variables ?? {}) as { id?: string; since?: string };
        if (variables.id === undefined) {
          const follower: UserFollower = {
            userId,
            sent: new Map(),
            push: (json) => socket.send(`{"id":${JSON.stringify(id)},"type":"next","payload":${json}}`),
          };
          const unfollow = await follow(follower, sinceOf(variables));
          if (socket.readyState === socket.OPEN) operations.set(id, unfollow);
          else unfollow();
          return;
        }
        const taskId = decodeGlobalId(String(variables.id ?? ''));
        let done = false;
        let unwatch: (() => void) | undefined;
        const subscription: Subscription = {
          globalId: String(variables.id),
          userId,
          sent: 0,
          push: (json) => socket.send(`{"id":${JSON.stringify(id)},"type":"next","payload":${json}}`),
          finish: () => {
            done = true;
            unwatch?.();
            operations.delete(id);
            send({ id, type: 'complete' });
          },
        };
        unwatch = taskId ? await start(taskId, subscription) : undefined;
        if (!unwatch) {
          send({
            id,
            type: 'error',
            payload: [{ message: 'No such avatar task', extensions: { code: 'NOT_FOUND' } }],
          });
          return;
        }
        // A task already terminal finished during its snapshot, before `unwatch` was known.
        if (done) unwatch();
        else operations.set(id, unwatch);
        return;
      }
    }
  });
  socket.on('close', () => {
    for (const unwatch of operations.values()) unwatch();
    operations.clear();
  });
}

try {
  const server = createServer((req, res) => {
    const path = req.url ?? '/';
    if (req.method === 'POST' && path.startsWith('/callbacks/kie/')) {
      const [taskId = '', secret = ''] = path.slice('/callbacks/kie/'.length).split('/');
      void onCallback(req, res, taskId, secret);
    } else if (
      req.method === 'POST' &&
      path === '/graphql' &&
      req.headers.accept?.includes('text/event-stream')
    ) {
      void onSse(req, res);
    } else sendJson(res, 404, { ok: false });
  });
  const wss = new WebSocketServer({
    server,
    path: '/graphql',
    handleProtocols: (protocols) => (protocols.has('graphql-transport-ws') ? 'graphql-transport-ws' : false),
  });
  wss.on('connection', onSocket);
  const listening = sql ? await sql.listen(TASK_CHANNEL, (raw) => void onSignal(raw)) : undefined;
  await new Promise<void>((resolve) =>
    server.listen({ port: Number(env.PORT ?? 0), host: '127.0.0.1', backlog: LISTEN_BACKLOG }, resolve),
  );
  const { port } = server.address() as AddressInfo;
  reportReady(`http://127.0.0.1:${port}`, {
    stats: () => ({ subscribedTasks: byTask.size, followedUsers: byUser.size, sockets: wss.clients.size }),
    async stop() {
      for (const client of wss.clients) client.terminate();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await listening?.unlisten();
      await sql?.end({ timeout: 5 });
    },
  });
} catch (error) {
  reportFailure(error);
}
