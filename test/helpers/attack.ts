import { connect } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Worker } from 'node:worker_threads';
import { expect } from 'vitest';
import {
  type SimulatorKnobs,
  type SimulatorServer,
  startSimulatorServer,
} from '../../src/upstream/simulator.js';
import { createTestDatabase, hasPostgres, type TestDatabase } from './database.js';
import { signToken, startTestGateway, type TestGateway } from './gateway.js';
import { connectWs, subscribeFetchSse } from './subscriptions.js';

/**
 * Helpers for the attack suite: a production-configured gateway, requests written to a raw socket, and the
 * figures an attack is judged by (heap after collection, event-loop delay, /healthz answering).
 */

export interface ProductionStack {
  gateway: TestGateway;
  kie: SimulatorServer;
  stop(): Promise<void>;
}

/** NODE_ENV=production, HS256 tokens, a real kie client pointed at a standalone simulator. */
export async function startProductionStack(
  env: Record<string, string> = {},
  knobs: Partial<SimulatorKnobs> = { stepMs: 50 },
): Promise<ProductionStack> {
  const database: TestDatabase = await createTestDatabase(hasPostgres() ? 'postgres' : 'pglite');
  const kie = await startSimulatorServer({ knobs });
  const gateway = await startTestGateway({
    database,
    kieUrl: kie.url,
    env: { NODE_ENV: 'production', ...env },
  });
  return {
    gateway,
    kie,
    stop: async () => {
      await gateway.stop();
      await kie.close();
      await database.dispose();
    },
  };
}

export interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** Milliseconds from the first byte sent to the answer's end. */
  elapsedMs: number;
}

export interface RawRequest {
  method?: string;
  path?: string;
  headers?: Record<string, string>;
  /** Sent with Content-Length, or in chunks of Transfer-Encoding: chunked when `chunked`. */
  body?: string;
  chunked?: boolean;
  /** A Content-Length other than the body's, as a client that lies about it sends. */
  declaredLength?: number;
}

/**
 * One HTTP/1.1 request written to a raw socket, the whole body at once as an attacker would (the gateway may
 * answer and close before it has all been sent: what it answers is what counts).
 */
export function rawRequest(baseUrl: string, request: RawRequest): Promise<RawAnswer> {
  const { hostname, port } = new URL(baseUrl);
  const body = request.body ?? '';
  const headers: Record<string, string> = {
    host: `${hostname}:${port}`,
    connection: 'close',
    ...request.headers,
  };
  if (request.chunked) headers['transfer-encoding'] = 'chunked';
  if (!request.chunked || request.declaredLength !== undefined)
    headers['content-length'] = String(request.declaredLength ?? Buffer.byteLength(body));
  const head = `${request.method ?? 'POST'} ${request.path ?? '/graphql'} HTTP/1.1\r\n${Object.entries(
    headers,
  )
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('')}\r\n`;
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    const received: Buffer[] = [];
    socket.on('data', (chunk) => received.push(chunk));
    // A server that answers early and closes makes the rest of the write fail: expected here.
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      const text = Buffer.concat(received).toString('utf8');
      const [headText = '', ...rest] = text.split('\r\n\r\n');
      const [statusLine = '', ...headerLines] = headText.split('\r\n');
      const status = Number(statusLine.split(' ')[1]);
      if (!status) return reject(new Error(`no HTTP answer: ${JSON.stringify(text.slice(0, 200))}`));
      const answerHeaders = Object.fromEntries(
        headerLines.map((line) => {
          const colon = line.indexOf(':');
          return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()];
        }),
      );
      let answerBody = rest.join('\r\n\r\n');
      if (answerHeaders['transfer-encoding'] === 'chunked') answerBody = unchunk(answerBody);
      resolve({ status, headers: answerHeaders, body: answerBody, elapsedMs: performance.now() - started });
    });
    socket.write(head);
    if (!request.chunked) {
      socket.end(body);
      return;
    }
    const CHUNK = 64 * 1024;
    for (let offset = 0; offset < body.length; offset += CHUNK) {
      const piece = body.slice(offset, offset + CHUNK);
      socket.write(`${Buffer.byteLength(piece).toString(16)}\r\n${piece}\r\n`);
    }
    socket.end('0\r\n\r\n');
  });
}

function unchunk(text: string): string {
  let out = '';
  let rest = text;
  for (;;) {
    const lineEnd = rest.indexOf('\r\n');
    if (lineEnd < 0) return out;
    const size = Number.parseInt(rest.slice(0, lineEnd), 16);
    if (!size) return out;
    out += rest.slice(lineEnd + 2, lineEnd + 2 + size);
    rest = rest.slice(lineEnd + 2 + size + 2);
  }
}

/** A body built by the attacker: prefix + repeat × times + suffix. */
export interface BodyRecipe {
  prefix?: string;
  repeat?: string;
  times?: number;
  suffix?: string;
}

export interface AttackJob {
  method?: string;
  path?: string;
  headers?: Record<string, string>;
  body?: BodyRecipe;
  chunked?: boolean;
}

export interface AttackAnswer {
  status: number;
  elapsedMs: number;
  /** The first 2,000 characters of the answer, head included. */
  head: string;
}

/**
 * Sends `jobs` over raw sockets from a worker thread (test/helpers/attacker.mjs), `concurrency` at a time:
 * the megabytes are built and written off the gateway's event loop, so its delay is the gateway's own.
 */
export function attack(baseUrl: string, jobs: AttackJob[], concurrency = 1): Promise<AttackAnswer[]> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('./attacker.mjs', import.meta.url), {
      workerData: { baseUrl, jobs, concurrency },
    });
    worker.once('message', (answers: AttackAnswer[]) => {
      resolve(answers);
      void worker.terminate();
    });
    worker.once('error', reject);
  });
}

/** A JSON GraphQL body of about `bytes` characters: a valid query padded with a distinct comment. */
export function paddedQueryBody(index: number, bytes: number): BodyRecipe {
  const prefix = `{"query":"{ __typename } # ${index} `;
  const suffix = '"}';
  return { prefix, repeat: 'x', times: Math.max(0, bytes - prefix.length - suffix.length), suffix };
}

setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

/** The heap in use after full collections: what the process really holds. */
export async function settledHeapBytes(): Promise<number> {
  for (let round = 0; round < 3; round++) {
    collectGarbage();
    await new Promise((resolve) => setImmediate(resolve));
  }
  return process.memoryUsage().heapUsed;
}

/**
 * Issue 8's bound on an event-loop stall under an attack. The delay measured includes the time this process
 * waits for a core, so the files that assert it run alone, after every other file (the `isolated` project in
 * vitest.config.ts): a loaded machine must not pass for a blocked loop, nor the other way round.
 */
export const LOOP_STALL_LIMIT_MS = 100;

/**
 * The longest the event loop was blocked while `work` ran. The gateway runs in this process, so a stall
 * of the gateway is a stall of this loop.
 */
export async function longestLoopDelayMs<T>(work: () => Promise<T>): Promise<{ result: T; maxMs: number }> {
  const histogram = monitorEventLoopDelay({ resolution: 10 });
  histogram.enable();
  try {
    const result = await work();
    return { result, maxMs: histogram.max / 1e6 };
  } finally {
    histogram.disable();
  }
}

/** Asks /healthz every `intervalMs` until stopped; counts the answers that were not a quick 200. */
export function watchHealth(baseUrl: string, intervalMs = 50) {
  let stopped = false;
  const failures: string[] = [];
  let answered = 0;
  const running = (async () => {
    while (!stopped) {
      try {
        const response = await fetch(`${baseUrl}/healthz`, { signal: AbortSignal.timeout(2_000) });
        if (response.status === 200) answered++;
        else failures.push(`status ${response.status}`);
        await response.arrayBuffer();
      } catch (error) {
        failures.push(String(error));
      }
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await running;
      return { answered, failures };
    },
  };
}

/** The `index`th of many distinct valid queries of about `bytes` characters: a comment makes up the size. */
export function distinctPaddedQuery(index: number, bytes: number): string {
  const head = `{ __typename } # ${index} `;
  return head + 'x'.repeat(Math.max(0, bytes - head.length));
}

/** A subscription a document limit must refuse, and the variable naming that limit. */
export interface LimitedSubscription {
  query: string;
  limit: string;
}

/**
 * Sends each subscription over graphql-ws, the lean SSE path and graphql-sse, and checks that every transport
 * refuses it naming the same limit: the one operation gate serves them all.
 */
export async function expectRefusedOnEveryStream(
  gateway: TestGateway,
  user: string,
  cases: readonly LimitedSubscription[],
): Promise<void> {
  const ws = await connectWs(gateway, user);
  try {
    for (const { query, limit } of cases) {
      const viaWs = ws.subscribe({ query });
      const viaSse = await subscribeFetchSse(gateway, user, { query });
      for (const [transport, received] of Object.entries({ viaWs, viaSse })) {
        await received.waitForEnd();
        const refusal = received.errors[0] ?? (received.ending as { error?: unknown } | undefined)?.error;
        expect({ transport, limit, refusal: JSON.stringify(refusal) }).toEqual({
          transport,
          limit,
          refusal: expect.stringContaining(`"limit":"${limit}"`),
        });
        received.stop();
      }
      // graphql-sse's protocol refuses before its stream starts: a 400 with the errors, for its client.
      const viaGraphqlSse = await fetch(`${gateway.graphqlUrl}/stream`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'text/event-stream',
          authorization: `Bearer ${await signToken(user)}`,
        },
        body: JSON.stringify({ query }),
      });
      expect({ limit, status: viaGraphqlSse.status }).toEqual({ limit, status: 400 });
      expect(await viaGraphqlSse.text()).toContain(`"limit":"${limit}"`);
    }
  } finally {
    await ws.dispose();
  }
}
