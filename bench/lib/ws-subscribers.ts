import { type Client, createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { mapLimit } from './load.js';

/**
 * Subscribers as real apps are: one graphql-ws client (one socket, one token) per subscriber, each following
 * one task (subscribers that share a token share a socket). The same client talks to the gateway and to the raw ws baseline, so the client side costs the same.
 */

export const WATCH_TASK = `subscription Watch($id: ID!) {
  avatarTaskUpdated(id: $id) { id state version videoUrl updatedAt failure { code message } }
}`;

export interface TaskUpdate {
  id: string;
  state: string;
  version: number;
}

export interface Subscriber {
  /** The task's global id. */
  taskId: string;
  token: string;
}

export interface WsSubscribers {
  /** Subscriptions whose first snapshot arrived. */
  ready: number;
  errors: string[];
  close(): Promise<void>;
}

export interface WsSubscribeOptions {
  wsUrl: string;
  subscribers: readonly Subscriber[];
  /** Called with every update and the moment it arrived (performance.now()). */
  onUpdate(update: TaskUpdate, at: number): void;
  /** How many subscribers connect at once, so thousands of sockets do not stampede the server. */
  concurrency?: number;
  timeoutMs?: number;
  /**
   * Source addresses (127.0.0.x) the sockets are spread over, one after another: every (source, destination)
   * pair has its own range of ephemeral ports, which tens of thousands of sockets from one address exhaust.
   */
  localAddresses?: readonly string[];
}

export async function openWsSubscribers(options: WsSubscribeOptions): Promise<WsSubscribers> {
  const clients = new Map<string, Client>();
  const errors: string[] = [];
  const state: WsSubscribers = {
    ready: 0,
    errors,
    async close() {
      await Promise.all([...clients.values()].map((client) => client.dispose()));
      clients.clear();
    },
  };
  // Subscribers with the same token share one client, hence one socket.
  const clientFor = (token: string) => {
    let client = clients.get(token);
    if (!client) {
      const { localAddresses } = options;
      client = createClient({
        url: options.wsUrl,
        webSocketImpl: localAddresses?.length
          ? boundWebSocket(localAddresses[clients.size % localAddresses.length] as string)
          : WebSocket,
        lazy: false,
        retryAttempts: 0,
        connectionParams: { authorization: `Bearer ${token}` },
        onNonLazyError: (error) => errors.push(describe(error)),
      });
      clients.set(token, client);
    }
    return client;
  };
  const timeoutMs = options.timeoutMs ?? 30_000;
  await mapLimit(options.subscribers, options.concurrency ?? 100, async (subscriber) => {
    const client = clientFor(subscriber.token);
    await new Promise<void>((resolve) => {
      let first = true;
      const timer = setTimeout(() => {
        errors.push(`no snapshot within ${timeoutMs} ms`);
        resolve();
      }, timeoutMs);
      const settle = () => {
        if (!first) return;
        first = false;
        clearTimeout(timer);
        resolve();
      };
      client.subscribe<{ avatarTaskUpdated: TaskUpdate }>(
        { query: WATCH_TASK, variables: { id: subscriber.taskId } },
        {
          next: (result) => {
            const at = performance.now();
            const update = result.data?.avatarTaskUpdated;
            if (update) {
              if (first) state.ready++;
              options.onUpdate(update, at);
            } else if (result.errors) errors.push(JSON.stringify(result.errors[0]));
            settle();
          },
          error: (error) => {
            errors.push(describe(error));
            settle();
          },
          complete: settle,
        },
      );
    });
  });
  return state;
}

/** graphql-ws constructs its socket with (url, protocol) only: the source address rides on a subclass. */
const boundClasses = new Map<string, unknown>();
function boundWebSocket(localAddress: string): unknown {
  let bound = boundClasses.get(localAddress);
  if (!bound) {
    bound = class BoundWebSocket extends WebSocket {
      constructor(url: string | URL, protocols?: string | string[]) {
        super(url, protocols, { localAddress });
      }
    };
    boundClasses.set(localAddress, bound);
  }
  return bound;
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.message;
  // ws hands over an ErrorEvent, whose fields are not enumerable.
  const event = error as { message?: unknown; error?: unknown };
  if (typeof event?.message === 'string') return event.message;
  if (event?.error instanceof Error) return event.error.message;
  const close = error as { code?: number; reason?: string };
  if (typeof close?.code === 'number') return `socket closed ${close.code} ${close.reason ?? ''}`.trim();
  return JSON.stringify(error);
}
