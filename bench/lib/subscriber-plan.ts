import { execFileSync } from 'node:child_process';
import { type SeedTask, waitingTask } from './database.js';
import { signToken } from './tokens.js';
import type { Subscriber } from './ws-subscribers.js';

/**
 * Who subscribes to what. One subscriber is one app: its own user, token and socket, following one task. When
 * the open-file limit cannot hold a socket per subscriber on both ends, several subscriptions share a socket
 * (graphql-ws multiplexes) and the results say so.
 */

export function openFileLimit(): number {
  try {
    return Number(execFileSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).trim()) || 1024;
  } catch {
    return 1024;
  }
}

/** `atOnce`: how many subscribers the load generator holds at the same time, all sides together. */
export function subscriptionsPerSocket(atOnce: number): number {
  // Headroom for the database pool, the HTTP agent, the fake kie and the process itself.
  const limit = openFileLimit();
  const usable = Math.max(limit - 2_000, Math.floor(limit / 2));
  return usable >= atOnce ? 1 : Math.ceil(atOnce / usable);
}

export interface SubscriberPlan {
  tasks: SeedTask[];
  subscribers: Subscriber[];
  perSocket: number;
}

export async function planSubscribers(
  prefix: string,
  count: number,
  atOnce = count,
): Promise<SubscriberPlan> {
  const perSocket = subscriptionsPerSocket(atOnce);
  const users = Math.ceil(count / perSocket);
  const tokens = await Promise.all(
    Array.from({ length: users }, (_, user) => signToken(`${prefix}-${user}`)),
  );
  const tasks = Array.from({ length: count }, (_, index) =>
    waitingTask(`${prefix}-${Math.floor(index / perSocket)}`, index),
  );
  const subscribers = tasks.map((task, index) => ({
    taskId: task.globalId,
    token: tokens[Math.floor(index / perSocket)] as string,
  }));
  return { tasks, subscribers, perSocket };
}

/** Fresh rows for the same tasks, for the next side of a comparison. */
export function freshCopies(tasks: readonly SeedTask[]): SeedTask[] {
  return tasks.map((task) => ({ ...task, state: 'WAITING', version: 2 }));
}
