/**
 * `npm run soak -- --minutes N [--rate R] [--faults drop,duplicate,late,kie-errors,kie-slow,postgres]`: steady load against a real gateway process (creates from many
 * users, live subscribers over graphql-ws) while faults are injected at random: kie's callbacks dropped,
 * duplicated or late, kie erroring and slow, and Postgres dropping every connection of the gateway
 * (`pg_terminate_backend`). Then it waits for every task to finish and reports: every task's final state, the
 * duplicate creates kie saw (counted per gateway task on the way to the simulator), tasks left unfinished,
 * and the slope of the gateway's heap. Exits 1 when a task is wrong or kie was paid twice.
 *
 * Needs a Postgres (TEST_DATABASE_URL, as the tests): it creates a database of its own and drops it after.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createClient } from 'graphql-ws';
import { SignJWT } from 'jose';
import postgres from 'postgres';
import WebSocket from 'ws';
import { startSimulatorServer } from '../src/upstream/simulator.js';

const { values: args } = parseArgs({
  options: {
    minutes: { type: 'string', default: '2' },
    rate: { type: 'string', default: '5' },
    // A comma-separated subset of FAULTS; all of them by default.
    faults: { type: 'string', default: '' },
  },
});
const minutes = Number(args.minutes);
const createsPerSecond = Number(args.rate);
const FAULTS = ['drop', 'duplicate', 'late', 'kie-errors', 'kie-slow', 'postgres'] as const;
const faultsChosen = args.faults ? args.faults.split(',').filter(Boolean) : [...FAULTS];
const unknownFault = faultsChosen.find((fault) => !(FAULTS as readonly string[]).includes(fault));
if (unknownFault) {
  console.error(`soak: unknown fault ${unknownFault}; choose from ${FAULTS.join(', ')}`);
  process.exit(1);
}
const USERS = 40;
const SUBSCRIBERS = 20;
const JWT_SECRET = randomBytes(32).toString('hex');
const METRICS_TOKEN = randomBytes(16).toString('hex');
const root = fileURLToPath(new URL('..', import.meta.url));

const adminUrl = process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL;
if (!adminUrl) {
  console.error('soak: set TEST_DATABASE_URL to a Postgres the soak may create a database on');
  process.exit(1);
}

const token = (user: string) =>
  new SignJWT({})
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(user)
    .setIssuedAt()
    .setExpirationTime('2h')
    .sign(new TextEncoder().encode(JWT_SECRET));

/** Creates kie received, per gateway task (from the task id in the callback URL): more than one is a duplicate. */
const createsPerTask = new Map<string, number>();

async function main() {
  const name = `avatar_gateway_soak_${randomBytes(4).toString('hex')}`;
  const admin = postgres(adminUrl as string, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name}`);
  const databaseUrl = Object.assign(new URL(adminUrl as string), { pathname: `/${name}` }).toString();
  const kie = await startSimulatorServer({ knobs: { stepMs: 700 } });
  const counter = await startCountingProxy(kie.url);
  const gateway = await startGateway(databaseUrl, counter.url);
  const cleanup = async () => {
    gateway.child.kill('SIGKILL');
    await counter.close();
    await kie.close();
    await admin.unsafe(`drop database if exists ${name} with (force)`).catch(() => {});
    await admin.end();
  };
  try {
    await run(gateway, kie.simulator.knobs, admin, name);
  } finally {
    await cleanup();
  }
}

async function run(
  gateway: Gateway,
  knobs: Awaited<ReturnType<typeof startSimulatorServer>>['simulator']['knobs'],
  admin: postgres.Sql,
  database: string,
) {
  const tokens = await Promise.all(Array.from({ length: USERS }, (_, index) => token(`soak-user-${index}`)));
  // Live subscribers: each user's whole stream, over graphql-ws.
  let delivered = 0;
  let subscriberErrors = 0;
  const clients = tokens.slice(0, SUBSCRIBERS).map((bearer) => {
    const client = createClient({
      url: gateway.wsUrl,
      webSocketImpl: WebSocket,
      connectionParams: { authorization: `Bearer ${bearer}` },
      retryAttempts: 1_000,
      shouldRetry: () => true,
      on: {
        error: () => {
          subscriberErrors += 1;
        },
      },
    });
    client.subscribe(
      { query: 'subscription { avatarTaskUpdated { id state version } }' },
      {
        next: () => {
          delivered += 1;
        },
        error: () => {
          subscriberErrors += 1;
        },
        complete: () => {},
      },
    );
    return client;
  });

  const faults: string[] = [];
  const answers = new Map<string, number>();
  const heap: Array<[number, number]> = [];
  const started = Date.now();
  const endAt = started + minutes * 60_000;
  let sent = 0;
  const inFlight = new Set<Promise<void>>();
  let nextFaultAt = started + 10_000;
  let restoreAt = 0;
  let nextHeapAt = started;

  while (Date.now() < endAt && !gateway.exited()) {
    const now = Date.now();
    if (now >= nextHeapAt) {
      nextHeapAt = now + 5_000;
      const used = await gateway.heapUsed();
      if (used) heap.push([(now - started) / 60_000, used / 1024 / 1024]);
    }
    if (restoreAt && now >= restoreAt) {
      Object.assign(knobs, { callbackMode: 'normal', createDelayMs: 0 });
      restoreAt = 0;
    }
    if (now >= nextFaultAt) {
      faults.push(await injectFault(knobs, admin, database));
      restoreAt = now + 8_000;
      nextFaultAt = now + 10_000 + Math.random() * 10_000;
    }
    const bearer = tokens[sent % tokens.length] as string;
    const request: Promise<void> = create(gateway.graphqlUrl, bearer)
      .then((answer) => {
        answers.set(answer, (answers.get(answer) ?? 0) + 1);
      })
      .finally(() => inFlight.delete(request));
    inFlight.add(request);
    sent += 1;
    await sleep(Math.max(0, started + (sent * 1_000) / createsPerSecond - Date.now()));
  }
  Object.assign(knobs, { callbackMode: 'normal', createDelayMs: 0, createErrors: [], queryErrors: [] });
  await Promise.all(inFlight);

  // Every task must end; with callbacks dropped the poller finds them (POLL_MAX_DELAY_MS is short here).
  const sql = postgres(gateway.databaseUrl, { max: 1, onnotice: () => {} });
  const settleStarted = Date.now();
  let unfinished = Number.POSITIVE_INFINITY;
  while (Date.now() - settleStarted < (gateway.exited() ? 0 : 120_000)) {
    const [row] = await sql<Array<{ n: number }>>`
      select count(*)::int as n from avatar_tasks where state not in ('SUCCEEDED', 'FAILED', 'CANCELED')`;
    unfinished = row?.n ?? 0;
    if (unfinished === 0) break;
    await sleep(1_000);
  }
  if (unfinished === Number.POSITIVE_INFINITY) {
    const [row] = await sql<Array<{ n: number }>>`
      select count(*)::int as n from avatar_tasks where state not in ('SUCCEEDED', 'FAILED', 'CANCELED')`;
    unfinished = row?.n ?? 0;
  }
  const settleSeconds = (Date.now() - settleStarted) / 1000;
  const states = await sql<Array<{ state: string; code: string | null; n: number }>>`
    select state, failure_code as code, count(*)::int as n from avatar_tasks group by 1, 2 order by 1, 2`;
  await sql.end();
  for (const client of clients) await client.dispose();

  const duplicates = [...createsPerTask.values()].filter((count) => count > 1).length;
  const total = states.reduce((sum, row) => sum + row.n, 0);
  const wrong = states.filter((row) => row.state !== 'SUCCEEDED').reduce((sum, row) => sum + row.n, 0);
  const slope = heapSlope(heap.filter(([minute]) => minute >= minutes / 2));
  const report = [
    `soak: ${minutes} min at ${createsPerSecond} creates/s, ${USERS} users, ${SUBSCRIBERS} live subscribers`,
    `  mutations: ${sent} sent, answers ${JSON.stringify(Object.fromEntries(answers))}`,
    `  faults injected (${faults.length}): ${faults.join(', ')}`,
    `  tasks: ${total}; final states ${states.map((row) => `${row.state}${row.code ? `/${row.code}` : ''}=${row.n}`).join(', ')}`,
    `  not SUCCEEDED: ${wrong}; unfinished after ${settleSeconds.toFixed(0)} s of settling: ${unfinished}`,
    `  kie: ${[...createsPerTask.values()].reduce((sum, count) => sum + count, 0)} creates for ${createsPerTask.size} tasks, duplicates ${duplicates}`,
    `  subscribers: ${delivered} updates delivered, ${subscriberErrors} errors`,
    `  gateway heap: ${heap.at(0)?.[1].toFixed(1)} MB at start, ${heap.at(-1)?.[1].toFixed(1)} MB at end, slope over the second half ${slope.toFixed(2)} MB/min`,
  ];
  const crashed = gateway.exited();
  report.push(
    `  gateway ${crashed ? `EXITED during the soak (${gateway.child.exitCode ?? gateway.child.signalCode})` : 'ran throughout'}`,
  );
  console.log(report.join('\n'));
  if (duplicates > 0 || unfinished > 0 || wrong > 0 || crashed) process.exitCode = 1;
}

async function create(graphqlUrl: string, bearer: string): Promise<string> {
  try {
    const response = await fetch(graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${bearer}` },
      body: JSON.stringify({
        query: `mutation($input: CreateAvatarTaskInput!) {
          createAvatarTask(input: $input) { __typename ... on Error { code } } }`,
        variables: {
          input: { imageUrl: 'https://example.com/face.png', audioUrl: 'https://example.com/voice.mp3' },
        },
      }),
      signal: AbortSignal.timeout(60_000),
    });
    const body = (await response.json()) as {
      data?: { createAvatarTask?: { __typename: string; code?: string } };
      errors?: Array<{ extensions?: { code?: string } }>;
    };
    const result = body.data?.createAvatarTask;
    return result
      ? (result.code ?? result.__typename)
      : `HTTP ${response.status} ${body.errors?.[0]?.extensions?.code ?? ''}`.trim();
  } catch (error) {
    return `no answer (${(error as { cause?: { code?: string } }).cause?.code ?? (error as Error).name})`;
  }
}

type Knobs = Awaited<ReturnType<typeof startSimulatorServer>>['simulator']['knobs'];

/** One fault at random; it lasts until the loop restores the knobs (8 s), a terminated connection at once. */
async function injectFault(knobs: Knobs, admin: postgres.Sql, database: string): Promise<string> {
  const pick = faultsChosen[Math.floor(Math.random() * faultsChosen.length)];
  switch (pick) {
    case 'drop':
      knobs.callbackMode = 'drop';
      return 'callbacks dropped';
    case 'duplicate':
      knobs.callbackMode = 'duplicate';
      return 'callbacks duplicated';
    case 'late':
      Object.assign(knobs, { callbackMode: 'late', lateMs: 3_000 });
      return 'callbacks late';
    case 'kie-errors':
      knobs.createErrors.push(429, 500, 503, 455);
      knobs.queryErrors.push(500, 503);
      return 'kie errors';
    case 'kie-slow':
      knobs.createDelayMs = 3_000;
      return 'kie slow';
    default: {
      const killed = await admin<Array<{ n: number }>>`
        select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
        where datname = ${database} and pid <> pg_backend_pid()`;
      return `postgres dropped ${killed[0]?.n ?? 0} connections`;
    }
  }
}

/** Least-squares slope of heap MB per minute. */
function heapSlope(points: Array<[number, number]>): number {
  if (points.length < 2) return 0;
  const n = points.length;
  const mx = points.reduce((sum, [x]) => sum + x, 0) / n;
  const my = points.reduce((sum, [, y]) => sum + y, 0) / n;
  const sxy = points.reduce((sum, [x, y]) => sum + (x - mx) * (y - my), 0);
  const sxx = points.reduce((sum, [x]) => sum + (x - mx) ** 2, 0);
  return sxx === 0 ? 0 : sxy / sxx;
}

/** A create kie answered with a task id (a refused one created nothing), counted for its gateway task. */
function countCreate(request: Buffer, answer: Buffer) {
  try {
    const created = JSON.parse(answer.toString('utf8')) as { code?: number; data?: { taskId?: string } };
    if (created.code !== 200 || !created.data?.taskId) return;
    const callBackUrl = String(JSON.parse(request.toString('utf8')).callBackUrl ?? '');
    const taskId = /\/callbacks\/kie\/([^/]+)\//.exec(callBackUrl)?.[1] ?? 'unknown';
    createsPerTask.set(taskId, (createsPerTask.get(taskId) ?? 0) + 1);
  } catch {
    // Not JSON: nothing was created.
  }
}

/** In front of the simulator: passes every request on, and counts the creates (see countCreate). */
async function startCountingProxy(target: string) {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    void (async () => {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      const body = Buffer.concat(chunks);
      const headers = Object.fromEntries(
        Object.entries(req.headers).filter(([key]) => key !== 'host' && key !== 'content-length'),
      ) as Record<string, string>;
      const upstream = await fetch(`${target}${req.url}`, {
        method: req.method,
        headers,
        ...(req.method === 'GET' || req.method === 'HEAD' ? {} : { body }),
      }).catch(() => undefined);
      if (!upstream) {
        res.writeHead(502).end();
        return;
      }
      const answer = Buffer.from(await upstream.arrayBuffer());
      if (req.url?.startsWith('/api/v1/jobs/createTask')) countCreate(body, answer);
      res.writeHead(upstream.status, {
        'content-type': upstream.headers.get('content-type') ?? 'application/json',
      });
      res.end(answer);
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

interface Gateway {
  child: ChildProcess;
  graphqlUrl: string;
  wsUrl: string;
  databaseUrl: string;
  heapUsed(): Promise<number | undefined>;
  /** True once the gateway process has ended (it should not, during a soak). */
  exited(): boolean;
}

async function startGateway(databaseUrl: string, kieUrl: string): Promise<Gateway> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as AddressInfo).port;
  await new Promise((resolve) => probe.close(resolve));
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: root,
    env: {
      PATH: process.env.PATH ?? '',
      NODE_ENV: 'production',
      HOST: '127.0.0.1',
      PORT: String(port),
      PUBLIC_URL: url,
      DATA_DIR: await mkdtemp(path.join(tmpdir(), 'avatar-gateway-soak-')),
      DATABASE_URL: databaseUrl,
      KIE_API_URL: kieUrl,
      KIE_API_KEY: 'soak-kie-key',
      AUTH_JWT_SECRET: JWT_SECRET,
      // The inputs are placeholder URLs that exist nowhere.
      CHECK_INPUT_URLS: 'false',
      METRICS_TOKEN,
      LOG_LEVEL: 'error',
      POLL_INTERVAL_MS: '500',
      POLL_MIN_DELAY_MS: '2000',
      POLL_MAX_DELAY_MS: '5000',
      SUBMIT_GRACE_MS: '30000',
      KIE_MAX_CREATES_PER_10S: '200',
      KIE_MAX_QUERIES_PER_S: '100',
      MAX_ACTIVE_TASKS_PER_USER: '10000',
      MAX_CREATES_PER_USER_PER_HOUR: '100000',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  for (let attempt = 0; ; attempt++) {
    const ready = await fetch(`${url}/readyz`).then(
      (response) => response.ok,
      () => false,
    );
    if (ready) break;
    if (attempt > 300 || child.exitCode !== null) throw new Error('soak: the gateway did not start');
    await sleep(200);
  }
  return {
    child,
    graphqlUrl: `${url}/graphql`,
    wsUrl: `ws://127.0.0.1:${port}/graphql`,
    databaseUrl,
    exited: () => child.exitCode !== null || child.signalCode !== null,
    heapUsed: async () => {
      const text = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
        .then((response) => response.text())
        .catch(() => '');
      const line = text.split('\n').find((candidate) => candidate.startsWith('nodejs_heap_size_used_bytes '));
      return line ? Number(line.split(' ')[1]) : undefined;
    },
  };
}

// The load's own clients (graphql-ws reconnecting to a gateway that went away) must not end the soak
// before it reports.
process.on('uncaughtException', (error) =>
  console.error(`soak client error: ${(error as Error)?.message ?? error}`),
);
await main();
