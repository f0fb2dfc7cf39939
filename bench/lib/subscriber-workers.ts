import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import type { OpenRequest, WorkerMessage } from '../processes/ws-subscriber-worker.js';
import { repoRoot } from './processes.js';
import { fromSharedClock } from './shared-clock.js';
import type { Subscriber, TaskUpdate } from './ws-subscribers.js';

/**
 * graphql-ws subscribers held by child processes of the load generator (bench/processes/ws-subscriber-worker.ts),
 * for more sockets than one process's open-file limit allows. Children inherit this process's core (the load
 * generator's), so they do not take the servers' core. Subscribers that share a token share a socket and stay
 * in one child. Arrival times come back on the shared monotonic clock and are handed to `onUpdate` as this
 * process's performance.now(), the clock the callbacks were sent by.
 */

const WORKER_SCRIPT = 'bench/processes/ws-subscriber-worker.ts';
const START_TIMEOUT_MS = 30_000;
/** A child that has not closed its sockets by then is killed. */
const CLOSE_TIMEOUT_MS = 30_000;

export interface WorkerSubscribers {
  ready: number;
  /** From the moment every child was up to the moment the last subscription had its snapshot. */
  openSeconds: number;
  errors: string[];
  /** Sockets opened (one per token). */
  sockets: number;
  close(): Promise<void>;
}

export interface WorkerSubscribeOptions {
  wsUrl: string;
  subscribers: readonly Subscriber[];
  workers: number;
  /** Source addresses the sockets are spread over (each child uses all of them). */
  localAddresses: readonly string[];
  onUpdate(update: Pick<TaskUpdate, 'id' | 'version'>, at: number): void;
  /** Subscriptions being set up at once, all children together. */
  concurrency: number;
  /** Deadline for each subscription's first snapshot. */
  snapshotTimeoutMs: number;
  /** Deadline for all of them. */
  openTimeoutMs: number;
}

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export async function openWorkerSubscribers(options: WorkerSubscribeOptions): Promise<WorkerSubscribers> {
  const groups = bySocket(options.subscribers);
  const shares = split(groups, options.workers);
  const children = shares.map(() => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, WORKER_SCRIPT)], {
      cwd: repoRoot,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    running.add(child);
    child.once('exit', () => running.delete(child));
    child.on('message', (message: WorkerMessage) => {
      if (message.type !== 'updates') return;
      for (const [id, version, at] of message.updates) options.onUpdate({ id, version }, fromSharedClock(at));
    });
    return child;
  });
  const closeAll = () => Promise.all(children.map(closeChild)).then(() => undefined);
  try {
    // Started first, so the children's own start (tsx compiling) is not counted as the server's time.
    await Promise.all(children.map((child) => awaitMessage(child, 'ready', START_TIMEOUT_MS)));
    const begin = performance.now();
    const opened = await Promise.all(
      children.map((child, index) => {
        const share = shares[index] as Subscriber[];
        const request: OpenRequest = {
          type: 'open',
          wsUrl: options.wsUrl,
          subscribers: share,
          localAddresses: [...options.localAddresses],
          concurrency: Math.max(1, Math.round(options.concurrency / children.length)),
          timeoutMs: options.snapshotTimeoutMs,
        };
        child.send(request);
        return awaitMessage(child, 'opened', options.openTimeoutMs);
      }),
    );
    const openSeconds = (performance.now() - begin) / 1000;
    return {
      openSeconds,
      ready: opened.reduce((sum, message) => sum + message.ready, 0),
      errors: opened.flatMap((message) => message.errors).slice(0, 5),
      sockets: groups.length,
      close: closeAll,
    };
  } catch (error) {
    await closeAll();
    throw error;
  }
}

/** Subscribers in groups of one token, in their order. */
function bySocket(subscribers: readonly Subscriber[]): Subscriber[][] {
  const groups = new Map<string, Subscriber[]>();
  for (const subscriber of subscribers) {
    const group = groups.get(subscriber.token);
    if (group) group.push(subscriber);
    else groups.set(subscriber.token, [subscriber]);
  }
  return [...groups.values()];
}

/** `groups` dealt into `parts` contiguous shares of about equal socket counts. */
function split(groups: readonly Subscriber[][], parts: number): Subscriber[][] {
  const count = Math.max(1, Math.min(parts, groups.length));
  const size = Math.ceil(groups.length / count);
  return Array.from({ length: count }, (_, part) => groups.slice(part * size, (part + 1) * size).flat());
}

function awaitMessage<T extends WorkerMessage['type']>(
  child: ChildProcess,
  type: T,
  timeoutMs: number,
): Promise<Extract<WorkerMessage, { type: T }>> {
  return new Promise((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`subscriber worker ${child.pid}: no ${type} within ${timeoutMs} ms`));
    }, timeoutMs);
    const onMessage = (message: WorkerMessage) => {
      if (message.type !== type) return;
      done();
      resolve(message as Extract<WorkerMessage, { type: T }>);
    };
    const onExit = (code: number | null) => {
      done();
      reject(new Error(`subscriber worker ${child.pid} exited with ${code} before ${type}`));
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
  });
}

async function closeChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  if (child.connected) child.send({ type: 'close' });
  const timer = setTimeout(() => child.kill('SIGKILL'), CLOSE_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}
