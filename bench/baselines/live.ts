/**
 * The live-updates baseline: kie callbacks in over node:http, task updates out over a raw `ws` server (speaking
 * just enough graphql-transport-ws for the graphql-ws client) and over raw text/event-stream, with no GraphQL
 * and no ORM.
 *
 * With DATABASE_URL it does the gateway's database work by hand: the callback checks the per-task secret and
 * the HMAC, runs the same transition transaction and NOTIFY; a LISTEN handler re-reads the row and sends it.
 * Without DATABASE_URL it is the transport floor: a callback's state goes straight to the subscriber's socket.
 * With nobody subscribed, it is also the callbacks scenario's baseline.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import postgres from 'postgres';
import { type WebSocket, WebSocketServer } from 'ws';
import { isTerminal, type UpstreamSnapshot, upstreamStates } from '../../src/tasks/states.js';
import { benchEnv, reportFailure, reportReady } from '../lib/child.js';
import { Auth, decodeGlobalId, readBody, sameSecret, sendJson, validSignature } from './common.js';
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
  const signal = JSON.parse(raw) as { taskId: string; version: number };
  const subscriptions = byTask.get(signal.taskId);
  if (!subscriptions || !tasks) return;
  if ([...subscriptions].every((subscription) => subscription.sent >= signal.version)) return;
  const task = await tasks.findById(signal.taskId);
  if (!task) return;
  for (const subscription of [...subscriptions]) deliver(subscription, task);
}

async function onSse(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const userId = await auth.userOf(req.headers.authorization);
  if (!userId) return sendJson(res, 401, { errors: [{ message: 'unauthenticated' }] });
  const body = JSON.parse(await readBody(req)) as { variables?: { id?: string } };
  const taskId = decodeGlobalId(String(body.variables?.id ?? ''));
  res.writeHead(200, {
    'content-type': 'text/event-stream',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
  });
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
        const variables = (message.payload?.variables ?? {}) as { id?: string };
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
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  reportReady(`http://127.0.0.1:${port}`, {
    stats: () => ({ subscribedTasks: byTask.size, sockets: wss.clients.size }),
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
