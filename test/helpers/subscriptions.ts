import { createHmac } from 'node:crypto';
import type { ExecutionResult, FormattedExecutionResult, GraphQLFormattedError } from 'graphql';
import { createClient as createSseClient } from 'graphql-sse';
import { type Client, createClient as createWsClient } from 'graphql-ws';
import { vi } from 'vitest';
import WebSocket from 'ws';
import type { AvatarTaskRow } from '../../src/db/schema.js';
import { taskIdFromGlobalId } from '../../src/graphql/types/avatar-task.js';
import {
  type SimulatorKnobs,
  type SimulatorServer,
  startSimulatorServer,
} from '../../src/upstream/simulator.js';
import { createTestDatabase, type DatabaseKind, type TestDatabase } from './database.js';
import { signToken, startTestGateway, type TestGateway } from './gateway.js';

/** How an operation ended: the server completed it, or it failed (an error message, a closed socket). */
export type Ending = { kind: 'complete' } | { kind: 'error'; error: unknown };

export interface Operation {
  query: string;
  variables?: Record<string, unknown>;
}

/**
 * Everything one subscription received, in arrival order, with the arrival time of each payload, so a test
 * can assert on order, duplicates and completion without racing the transport.
 */
export class Received<T = Record<string, unknown>> {
  readonly results: FormattedExecutionResult<T>[] = [];
  /** performance.now() at each payload's arrival. */
  readonly arrivals: number[] = [];
  ending: Ending | undefined;
  readonly ended: Promise<Ending>;
  private resolveEnded!: (ending: Ending) => void;
  private readonly waiters = new Set<() => void>();
  /** Set by the transport: unsubscribes / aborts. */
  stop: () => void = () => {};

  constructor() {
    this.ended = new Promise((resolve) => {
      this.resolveEnded = resolve;
    });
  }

  push(result: FormattedExecutionResult<T>): void {
    if (this.ending) return;
    this.results.push(result);
    this.arrivals.push(performance.now());
    for (const waiter of this.waiters) waiter();
  }

  end(ending: Ending): void {
    if (this.ending) return;
    this.ending = ending;
    this.resolveEnded(ending);
    for (const waiter of this.waiters) waiter();
  }

  /** The data of every payload that had data. */
  get data(): T[] {
    return this.results.flatMap((result) => (result.data ? [result.data] : []));
  }

  get errors(): GraphQLFormattedError[] {
    return this.results.flatMap((result) => result.errors ?? []);
  }

  /** Resolves once `predicate` holds (checked on every payload and on the end), rejects after `timeoutMs`. */
  until(
    predicate: (received: this) => boolean,
    timeoutMs = 10_000,
    what = 'the expected payloads',
  ): Promise<void> {
    if (predicate(this)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!predicate(this)) return;
        cleanup();
        resolve();
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new Error(
            `timed out after ${timeoutMs} ms waiting for ${what}; received ${JSON.stringify(this.results)}, ending ${JSON.stringify(this.ending)}`,
          ),
        );
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
    });
  }

  /** Waits for the end of the operation and returns it; rejects after `timeoutMs`. */
  async waitForEnd(timeoutMs = 10_000): Promise<Ending> {
    await this.until((received) => received.ending !== undefined, timeoutMs, 'the end of the operation');
    return this.ending as Ending;
  }
}

/** A sink for graphql-ws and graphql-sse clients, which share this shape. */
function sinkFor<T>(received: Received<T>) {
  return {
    next: (value: FormattedExecutionResult<T> | ExecutionResult<T, unknown>) =>
      received.push(value as FormattedExecutionResult<T>),
    // A closed socket arrives as a CloseEvent, which prints as {}: keep what it says.
    error: (error: unknown) =>
      received.end({
        kind: 'error',
        error:
          error && typeof error === 'object' && 'code' in error && 'reason' in error
            ? { closed: error.code, reason: String(error.reason) }
            : error,
      }),
    complete: () => received.end({ kind: 'complete' }),
  };
}

export interface CloseInfo {
  code: number;
  reason: string;
}

export interface WsConnection {
  client: Client;
  /** Resolves with the first close of the socket (graphql-ws does not reconnect: retryAttempts 0). */
  closed: Promise<CloseInfo>;
  /** Resolves when the server acknowledged connection_init. */
  connected: Promise<void>;
  subscribe<T = Record<string, unknown>>(operation: Operation): Received<T>;
  /**
   * Runs a query on the same socket and resolves with its data. Sent after a subscribe, it answers after
   * that subscribe has reached its resolver (both take the same steps on the server, the subscribe first),
   * which is the only "subscribed" signal a user-wide stream without `since` can give.
   */
  query<T = Record<string, unknown>>(query: string): Promise<T>;
  dispose(): Promise<void>;
}

/**
 * A graphql-ws client on the `ws` package, connecting at once. `auth` is a user id (a token is signed for
 * it), a ready token via `{ token }`, or null for no connection params at all.
 */
export async function connectWs(
  gateway: Pick<TestGateway, 'wsUrl'>,
  auth: string | { token: string } | null,
): Promise<WsConnection> {
  const token = auth === null ? undefined : typeof auth === 'string' ? await signToken(auth) : auth.token;
  let onClosed!: (info: CloseInfo) => void;
  const closed = new Promise<CloseInfo>((resolve) => {
    onClosed = resolve;
  });
  let onConnected!: () => void;
  const connected = new Promise<void>((resolve) => {
    onConnected = resolve;
  });
  const client = createWsClient({
    url: gateway.wsUrl,
    webSocketImpl: WebSocket,
    lazy: false,
    retryAttempts: 0,
    shouldRetry: () => false,
    // The default re-throws the close event as an unhandled error when a non-lazy socket is refused.
    onNonLazyError: () => {},
    ...(token === undefined ? {} : { connectionParams: { authorization: `Bearer ${token}` } }),
    on: {
      connected: () => onConnected(),
      closed: (event) => {
        const { code, reason } = event as { code: number; reason: unknown };
        onClosed({ code, reason: String(reason ?? '') });
      },
    },
  });
  return {
    client,
    closed,
    connected,
    subscribe<T>(operation: Operation) {
      const received = new Received<T>();
      received.stop = client.subscribe<T>(operation, sinkFor(received));
      return received;
    },
    async query<T>(query: string) {
      const received = new Received<T>();
      received.stop = client.subscribe<T>({ query }, sinkFor(received));
      const ending = await received.waitForEnd();
      const [result] = received.results;
      if (ending.kind !== 'complete' || !result?.data || result.errors) {
        throw new Error(`query failed: ${JSON.stringify({ ending, results: received.results })}`);
      }
      return result.data;
    },
    dispose: async () => {
      await client.dispose();
    },
  };
}

/** graphql-sse's own client (its protocol, at /graphql/stream, distinct connections mode). */
export async function subscribeGraphqlSse<T = Record<string, unknown>>(
  gateway: Pick<TestGateway, 'graphqlUrl'>,
  auth: string | { token: string } | null,
  operation: Operation,
): Promise<Received<T>> {
  const token = auth === null ? undefined : typeof auth === 'string' ? await signToken(auth) : auth.token;
  const client = createSseClient({
    url: `${gateway.graphqlUrl}/stream`,
    retryAttempts: 0,
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
  });
  const received = new Received<T>();
  const unsubscribe = client.subscribe<T>(operation, sinkFor(received));
  received.stop = () => {
    unsubscribe();
    client.dispose();
  };
  void received.ended.then(() => client.dispose());
  return received;
}

export interface FetchSseReceived<T> extends Received<T> {
  /** The HTTP answer's status, content type and headers, once the headers arrived (none: no answer). */
  response: Promise<{ status: number; contentType: string | null; headers: Headers }>;
  /** Every SSE event name in order (`next`, `complete`, ...), comments (keep-alive pings) excluded. */
  eventNames: string[];
}

/**
 * A plain fetch reading `text/event-stream` from POST /graphql: GraphQL over SSE in its distinct
 * connections mode, as a browser's EventSource-less client or curl would do it. The operation ends
 * `complete` only on an explicit `complete` event; a stream that just stops is an error.
 */
export async function subscribeFetchSse<T = Record<string, unknown>>(
  gateway: Pick<TestGateway, 'graphqlUrl'>,
  auth: string | { token: string } | null,
  operation: Operation,
  method: 'POST' | 'GET' = 'POST',
  /** `application/json, text/event-stream` reaches yoga's own SSE instead of the lean transport. */
  accept = 'text/event-stream',
): Promise<FetchSseReceived<T>> {
  const token = auth === null ? undefined : typeof auth === 'string' ? await signToken(auth) : auth.token;
  const received = new Received<T>() as FetchSseReceived<T>;
  received.eventNames = [];
  const abort = new AbortController();
  received.stop = () => abort.abort();
  const headers: Record<string, string> = { accept };
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  let url = gateway.graphqlUrl;
  let body: string | undefined;
  if (method === 'GET') {
    const search = new URLSearchParams({ query: operation.query });
    if (operation.variables) search.set('variables', JSON.stringify(operation.variables));
    url = `${url}?${search}`;
  } else {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(operation);
  }
  const responded = fetch(url, { method, headers, body, signal: abort.signal });
  received.response = responded.then(
    (response) => ({
      status: response.status,
      contentType: response.headers.get('content-type'),
      headers: response.headers,
    }),
    () => ({ status: 0, contentType: null, headers: new Headers() }),
  );
  void (async () => {
    try {
      const response = await responded;
      if (!response.body) throw new Error(`no body (HTTP ${response.status})`);
      if (!response.headers.get('content-type')?.startsWith('text/event-stream')) {
        // Not a stream (e.g. a 4xx with a JSON body): surface the body as the one result.
        received.push((await response.json()) as FormattedExecutionResult<T>);
        received.end({ kind: 'error', error: new Error(`HTTP ${response.status}, not an event stream`) });
        return;
      }
      const decoder = new TextDecoder();
      let buffer = '';
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        // Events end with a blank line; a partial one waits for the next chunk.
        for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let event = 'message';
          const data: string[] = [];
          for (const line of block.split('\n')) {
            if (line.startsWith(':') || line === '') continue;
            const colon = line.indexOf(':');
            const field = colon < 0 ? line : line.slice(0, colon);
            const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
            if (field === 'event') event = value;
            else if (field === 'data') data.push(value);
          }
          if (data.length === 0 && event === 'message') continue;
          received.eventNames.push(event);
          if (event === 'next' || event === 'message') {
            received.push(JSON.parse(data.join('\n')) as FormattedExecutionResult<T>);
          } else if (event === 'complete') {
            received.end({ kind: 'complete' });
          }
        }
      }
      received.end({ kind: 'error', error: new Error('the stream ended without a complete event') });
    } catch (error) {
      received.end({ kind: 'error', error });
    }
  })();
  return received;
}

/** A task's row by its global id, read straight from the gateway's database. */
export async function taskRow(gateway: TestGateway, globalId: string): Promise<AvatarTaskRow> {
  const id = taskIdFromGlobalId(globalId);
  const row = id ? await gateway.app.service.repository.findById(id) : undefined;
  if (!row) throw new Error(`no task row for ${globalId}`);
  return row;
}

/**
 * Posts kie's success callback for a task to the gateway, as kie would: to the task's callback URL, signed
 * with the webhook HMAC when `hmacKey` is given. Returns the HTTP status.
 */
export async function postSuccessCallback(
  gateway: TestGateway,
  row: Pick<AvatarTaskRow, 'id' | 'callbackSecret' | 'upstreamTaskId'>,
  options: { hmacKey?: string; resultUrl?: string } = {},
): Promise<number> {
  const upstreamTaskId = row.upstreamTaskId;
  if (!upstreamTaskId) throw new Error(`task ${row.id} has no upstream id yet`);
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (options.hmacKey) {
    const timestamp = String(Math.floor(Date.now() / 1000));
    headers['x-webhook-timestamp'] = timestamp;
    headers['x-webhook-signature'] = createHmac('sha256', options.hmacKey)
      .update(`${upstreamTaskId}.${timestamp}`)
      .digest('base64');
  }
  const response = await fetch(
    gateway.app.service.callbackUrl(row).replace(gateway.app.publicUrl, gateway.url),
    {
      method: 'POST',
      headers,
      body: JSON.stringify({
        code: 200,
        msg: 'Playground task completed successfully.',
        data: {
          taskId: upstreamTaskId,
          model: 'kling/ai-avatar-pro',
          state: 'success',
          resultJson: JSON.stringify({
            resultUrls: [options.resultUrl ?? `https://cdn.example.com/${row.id}.mp4`],
          }),
        },
      }),
    },
  );
  await response.arrayBuffer();
  return response.status;
}

/** Percentile (0..100) of a list of numbers, nearest-rank. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] as number;
}

/** The subscription every test here uses; `events` lets a test compare what it got with the history. */
export const TASK_UPDATED = `subscription Watch($id: ID, $since: DateTime) {
  avatarTaskUpdated(id: $id, since: $since) {
    id state version updatedAt videoUrl failure { code message }
    events { state source version }
  }
}`;

export interface UpdatedTask {
  id: string;
  state: string;
  version: number;
  updatedAt: string;
  videoUrl: string | null;
  failure: { code: string; message: string } | null;
  events: Array<{ state: string; source: string; version: number }>;
}

export type TaskUpdatedData = { avatarTaskUpdated: UpdatedTask };

/** The tasks a subscription received, in order. */
export const tasksOf = (received: Received<TaskUpdatedData>): UpdatedTask[] =>
  received.data.map((data) => data.avatarTaskUpdated);

export interface Stack {
  database: TestDatabase;
  kie: SimulatorServer;
  gateway: TestGateway;
  stop(): Promise<void>;
}

/** A fresh database, a standalone kie simulator with these knobs, and a gateway pointed at it. */
export async function startStack(
  kind: DatabaseKind,
  knobs: Partial<SimulatorKnobs>,
  env: Record<string, string> = {},
): Promise<Stack> {
  const database = await createTestDatabase(kind);
  const kie = await startSimulatorServer({ knobs });
  const gateway = await startTestGateway({ database, kieUrl: kie.url, env });
  return {
    database,
    kie,
    gateway,
    stop: async () => {
      await gateway.stop();
      await kie.close();
      await database.dispose();
    },
  };
}

/**
 * The id of `user`'s task that is still PENDING, found through the API while its createAvatarTask is
 * waiting for kie's answer (the simulator's createDelayMs), so a subscriber can start from version 1.
 */
export async function pendingTaskId(gateway: TestGateway, user: string): Promise<string> {
  let id: string | undefined;
  await vi.waitFor(
    async () => {
      const result = await gateway.gql<{ avatarTasks: { edges: Array<{ node: { id: string } }> } }>(
        'query { avatarTasks(first: 1, states: [PENDING]) { edges { node { id } } } }',
        {},
        user,
      );
      id = result.data?.avatarTasks.edges[0]?.node.id;
      if (!id) throw new Error('no PENDING task yet');
    },
    { timeout: 5_000, interval: 10 },
  );
  return id as string;
}
