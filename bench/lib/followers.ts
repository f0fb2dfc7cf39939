import { type Client, createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { mapLimit } from './load.js';
import { readNextEvents } from './sse-subscribers.js';
import type { LedgerUpdate, UpdateLedger } from './update-ledger.js';

/**
 * Followers as a real app holding a user's task list is: one client per user, subscribed to every change of
 * the user's tasks with `since:` the last `updatedAt` it saw, reconnecting on its own when the server goes
 * away. Over graphql-ws that is the library's own retry (`retryAttempts`, `retryWait` with jitter), with the
 * subscribe payload's `since` read afresh on every attempt; over SSE, a plain reconnect loop with jitter.
 */

export const FOLLOW_USER = `subscription Follow($since: DateTime) {
  avatarTaskUpdated(since: $since) { id state version updatedAt videoUrl failure { code message } }
}`;

/** The start of time: the first subscribe replays every task the user has. */
const EVERYTHING = new Date(0).toISOString();

export interface FollowedUser {
  token: string;
}

export interface Follower {
  /** The latest `updatedAt` received: the `since` of the next (re)subscribe. */
  since: string;
  /** When the follower last got through to the server (graphql-ws: acknowledged; SSE: the stream's 200). */
  connectedAt: number;
  connects: number;
}

export interface Followers {
  followers: Follower[];
  errors: string[];
  /** graphql-ws: how often each close code ended a socket the server had accepted (1006: no close frame). */
  closeCodes: Map<number, number>;
  close(): Promise<void>;
}

/** Full jitter on a capped exponential backoff: thousands of clients spread over the window instead of a wave. */
export interface Backoff {
  firstMs: number;
  maxMs: number;
}

export function jitteredDelay(backoff: Backoff, retries: number): number {
  return Math.random() * Math.min(backoff.maxMs, backoff.firstMs * 2 ** retries);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function newFollower(): Follower {
  return { since: EVERYTHING, connectedAt: 0, connects: 0 };
}

function receive(follower: Follower, ledger: UpdateLedger, update: LedgerUpdate, at: number): void {
  ledger.record(update, at);
  if (update.updatedAt > follower.since) follower.since = update.updatedAt;
}

export async function openWsFollowers(options: {
  wsUrl: string;
  users: readonly FollowedUser[];
  ledger: UpdateLedger;
  backoff: Backoff;
  /** How many clients open at once at the start, so the first connections do not stampede the server. */
  concurrency?: number;
}): Promise<Followers> {
  const errors: string[] = [];
  const closeCodes = new Map<number, number>();
  const clients: Client[] = [];
  const followers: Follower[] = [];
  await mapLimit(options.users, options.concurrency ?? 200, async (user) => {
    const follower = newFollower();
    followers.push(follower);
    const connected = new Promise<void>((resolve) => {
      const client = createClient({
        url: options.wsUrl,
        webSocketImpl: WebSocket,
        lazy: false,
        // A real app retries for as long as it is open; the scenario's own deadline bounds the wait.
        retryAttempts: Number.MAX_SAFE_INTEGER,
        retryWait: (retries) => sleep(jitteredDelay(options.backoff, retries)),
        // Every close of a dead server (1006) or a refused connection is worth another try.
        shouldRetry: () => true,
        connectionParams: { authorization: `Bearer ${user.token}` },
        on: {
          closed: (event) => {
            const code = (event as { code?: number } | undefined)?.code ?? 0;
            closeCodes.set(code, (closeCodes.get(code) ?? 0) + 1);
          },
          connected: () => {
            follower.connectedAt = performance.now();
            follower.connects++;
            resolve();
          },
        },
        onNonLazyError: (error) => errors.push(describe(error)),
      });
      clients.push(client);
      client.subscribe<{ avatarTaskUpdated: LedgerUpdate }>(
        {
          query: FOLLOW_USER,
          // Read when each subscribe message is written, so a retry asks for what it has not seen yet.
          variables: {
            get since() {
              return follower.since;
            },
          },
        },
        {
          next: (result) => {
            const at = performance.now();
            const update = result.data?.avatarTaskUpdated;
            if (update) receive(follower, options.ledger, update, at);
            else if (result.errors) errors.push(JSON.stringify(result.errors[0]));
          },
          error: (error) => errors.push(describe(error)),
          complete: () => {},
        },
      );
    });
    await connected;
  });
  return {
    followers,
    errors,
    closeCodes,
    async close() {
      await Promise.all(clients.map((client) => client.dispose()));
    },
  };
}

export async function openSseFollowers(options: {
  url: string;
  users: readonly FollowedUser[];
  ledger: UpdateLedger;
  backoff: Backoff;
  concurrency?: number;
}): Promise<Followers> {
  const errors: string[] = [];
  const controllers: AbortController[] = [];
  const followers: Follower[] = [];
  await mapLimit(options.users, options.concurrency ?? 100, async (user) => {
    // One each: fetch adds a listener to its signal per request, and every reconnect is a request.
    const controller = new AbortController();
    controllers.push(controller);
    const follower = newFollower();
    followers.push(follower);
    let first: (() => void) | undefined;
    const connected = new Promise<void>((resolve) => {
      first = resolve;
    });
    void (async () => {
      // Reconnects until the scenario closes it: after the stream ends or fails, after a jittered wait.
      for (let retries = 0; !controller.signal.aborted; ) {
        try {
          await readStream(
            options.url,
            user,
            follower,
            controller.signal,
            () => {
              follower.connectedAt = performance.now();
              follower.connects++;
              retries = 0;
              first?.();
            },
            (update, at) => receive(follower, options.ledger, update, at),
          );
        } catch (error) {
          if (controller.signal.aborted) return;
          const message = (error as Error).message;
          // A refused connection while the server is down, or its 503 while it starts, is expected; anything
          // else is worth reporting.
          if (!/fetch failed|terminated|ECONNREFUSED|other side closed|answered 503/i.test(message)) {
            errors.push(message);
          }
        }
        await sleep(jitteredDelay(options.backoff, retries));
        retries++;
      }
    })();
    await connected;
  });
  return {
    followers,
    errors,
    closeCodes: new Map(),
    async close() {
      for (const controller of controllers) controller.abort();
    },
  };
}

async function readStream(
  url: string,
  user: FollowedUser,
  follower: Follower,
  signal: AbortSignal,
  onConnected: () => void,
  onUpdate: (update: LedgerUpdate, at: number) => void,
) {
  const response = await fetch(url, {
    method: 'POST',
    headers: {
      accept: 'text/event-stream',
      'content-type': 'application/json',
      authorization: `Bearer ${user.token}`,
    },
    body: JSON.stringify({ query: FOLLOW_USER, variables: { since: follower.since } }),
    signal,
  });
  if (!response.ok || !response.body) throw new Error(`SSE answered ${response.status}`);
  onConnected();
  await readNextEvents(response.body, (data) => {
    const value = JSON.parse(data) as { data?: { avatarTaskUpdated?: LedgerUpdate }; errors?: unknown[] };
    const update = value.data?.avatarTaskUpdated;
    if (update) onUpdate(update, performance.now());
    else throw new Error(`SSE error: ${JSON.stringify(value.errors?.[0] ?? value)}`);
  });
  throw new Error('terminated');
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.message;
  const event = error as { message?: unknown; code?: number; reason?: string };
  if (typeof event?.message === 'string') return event.message;
  if (typeof event?.code === 'number') return `socket closed ${event.code} ${event.reason ?? ''}`.trim();
  return JSON.stringify(error);
}
