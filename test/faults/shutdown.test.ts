import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { createTestDatabase, hasPostgres, type TestDatabase } from '../helpers/database.js';
import { CREATE_TASK, sampleInput, signToken } from '../helpers/gateway.js';
import { type GatewayProcess, startGatewayProcess } from '../helpers/gateway-process.js';
import { connectWs, subscribeFetchSse, TASK_UPDATED, type WsConnection } from '../helpers/subscriptions.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';

/** The default: the drain under load has all of it (a busy machine makes the database and kie slow). */
const SHUTDOWN_TIMEOUT_MS = 25_000;
/** Black-holed, the drain is expected to run out: a shorter deadline keeps the test short. */
const BLACK_HOLE_SHUTDOWN_TIMEOUT_MS = 10_000;
const CREATES_PER_SECOND = 25;
const SOCKETS = 10;
const SUBSCRIPTIONS_PER_SOCKET = 50;

interface Answer {
  status: number | 'no answer';
  typename?: string;
}

/** One createAvatarTask over HTTP; a connection cut before the answer is 'no answer'. */
async function create(graphqlUrl: string, token: string): Promise<Answer> {
  try {
    const response = await fetch(graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ query: CREATE_TASK, variables: { input: sampleInput() } }),
    });
    const body = (await response.json()) as { data?: { createAvatarTask?: { __typename: string } } };
    return { status: response.status, typename: body.data?.createAvatarTask?.__typename };
  } catch (error) {
    return {
      status: 'no answer',
      typename: String((error as { cause?: { code?: string } }).cause?.code ?? error),
    };
  }
}

const countBy = <T>(values: T[]) =>
  values.reduce<Record<string, number>>((counts, value) => {
    counts[String(value)] = (counts[String(value)] ?? 0) + 1;
    return counts;
  }, {});

describe.skipIf(!hasPostgres())('SIGTERM drains the gateway', () => {
  let database: TestDatabase;
  let kie: SimulatorServer;
  const running: GatewayProcess[] = [];
  const cleanups: Array<() => Promise<void> | void> = [];

  beforeAll(async () => {
    database = await createTestDatabase('postgres');
    // Every create takes 1.5 s to be answered: at any moment dozens are in flight.
    kie = await startSimulatorServer({ knobs: { createDelayMs: 1_500, stepMs: 2_000 } });
  });
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    for (const gateway of running.splice(0)) gateway.kill();
  });
  afterAll(async () => {
    await kie?.close();
    await database?.dispose();
  });

  async function gateway(databaseUrl: string, shutdownTimeoutMs = SHUTDOWN_TIMEOUT_MS) {
    const started = await startGatewayProcess({
      databaseUrl,
      kieUrl: kie.url,
      env: {
        SHUTDOWN_TIMEOUT_MS: String(shutdownTimeoutMs),
        KIE_MAX_CREATES_PER_10S: '1000',
        // One more than the subscriptions, for the query that shows they have started.
        MAX_SUBSCRIPTIONS_PER_SOCKET: String(SUBSCRIPTIONS_PER_SOCKET + 1),
      },
    });
    running.push(started);
    return started;
  }

  it('under load: every in-flight mutation is answered, no submit is left in flight, it exits in time', async () => {
    const gw = await gateway(database.url ?? '');
    // 500 live subscriptions over graphql-ws, and a few SSE streams.
    const sockets: WsConnection[] = [];
    for (let index = 0; index < SOCKETS; index++) {
      const socket = await connectWs(gw, `watcher-${index}`);
      await socket.connected;
      for (let sub = 0; sub < SUBSCRIPTIONS_PER_SOCKET; sub++) socket.subscribe({ query: TASK_UPDATED });
      await socket.query('{ viewer { id } }');
      sockets.push(socket);
    }
    cleanups.push(() => Promise.all(sockets.map((socket) => socket.dispose())).then(() => {}));
    const streams = await Promise.all(
      Array.from({ length: 5 }, (_, index) =>
        subscribeFetchSse(gw, `sse-watcher-${index}`, { query: TASK_UPDATED }),
      ),
    );
    cleanups.push(() => {
      for (const stream of streams) stream.stop();
    });

    // 25 creates a second, each from its own user, for 3 s; then SIGTERM while about 40 are in flight.
    const tokens = await Promise.all(
      Array.from({ length: CREATES_PER_SECOND * 3 }, (_, index) => signToken(`creator-${index}`)),
    );
    const answers: Array<Promise<Answer>> = [];
    const loadStarted = performance.now();
    for (const [index, token] of tokens.entries()) {
      answers.push(create(gw.graphqlUrl, token));
      // On schedule, not after the previous sleep: 25 a second even when the loop is slow.
      await sleep(Math.max(0, loadStarted + ((index + 1) * 1_000) / CREATES_PER_SECOND - performance.now()));
    }
    // In flight means received: the last request is given time to reach the gateway (each waits 1.5 s on kie).
    await sleep(200);
    const signalled = performance.now();
    gw.child.kill('SIGTERM');
    // /readyz until it stops saying ready: the moment the gateway has taken the signal in.
    let readyAfterSignal: number | string = 200;
    while (readyAfterSignal === 200) {
      readyAfterSignal = await fetch(`${gw.url}/readyz`).then(
        (response) => response.status,
        () => 'refused',
      );
    }
    const notReadySeconds = (performance.now() - signalled) / 1000;

    const settled = await Promise.all(answers);
    const exit = await gw.exited;
    const exitSeconds = (exit.at - signalled) / 1000;
    const closes = await Promise.all(sockets.map((socket) => socket.closed));
    const streamEnds = await Promise.all(streams.map((stream) => stream.waitForEnd(SHUTDOWN_TIMEOUT_MS)));

    const sql = postgres(database.url ?? '', { max: 1, onnotice: () => {} });
    const rows = await sql<Array<{ submit_status: string; state: string; n: number }>>`
      select submit_status, state, count(*)::int as n from avatar_tasks group by 1, 2 order by 1, 2`;
    await sql.end();
    const inFlight = rows
      .filter((row) => row.submit_status === 'in_flight')
      .reduce((sum, row) => sum + row.n, 0);

    console.log(
      [
        `SIGTERM under load: ${settled.length} mutations sent, answers ${JSON.stringify(countBy(settled.map((a) => a.typename ?? a.status)))}`,
        `  /readyz ${readyAfterSignal} ${notReadySeconds.toFixed(2)} s after the signal; exit code ${exit.code} after ${exitSeconds.toFixed(1)} s (deadline ${SHUTDOWN_TIMEOUT_MS / 1000} s)`,
        `  sockets closed with ${JSON.stringify(countBy(closes.map((close) => close.code)))}, SSE streams ${JSON.stringify(countBy(streamEnds.map((end) => end.kind)))}`,
        `  tasks by submit status/state: ${rows.map((row) => `${row.submit_status}/${row.state}=${row.n}`).join(', ')}; in_flight ${inFlight}`,
        `  creates on kie ${kie.simulator.stats.creates}`,
      ].join('\n'),
    );
    if (settled.some((answer) => answer.status !== 200)) console.log(gw.output().slice(-6000));
    expect(settled.filter((answer) => answer.status !== 200)).toEqual([]);
    expect(settled.every((answer) => answer.typename === 'CreateAvatarTaskSuccess')).toBe(true);
    expect(readyAfterSignal).toBe(503);
    expect(notReadySeconds).toBeLessThan(2);
    expect(inFlight).toBe(0);
    expect(exit.code).toBe(0);
    expect(exitSeconds).toBeLessThan(SHUTDOWN_TIMEOUT_MS / 1000);
    expect(closes.every((close) => close.code === 1001)).toBe(true);
    expect(streamEnds.every((end) => end.kind !== 'complete')).toBe(true);
  }, 120_000);

  it('with Postgres black-holed: it still exits within the deadline, non-zero, and says why', async () => {
    const target = new URL(database.url ?? '');
    const proxy: TcpProxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
    cleanups.push(() => proxy.close());
    const gw = await gateway(proxy.url(database.url ?? ''), BLACK_HOLE_SHUTDOWN_TIMEOUT_MS);
    const tokens = await Promise.all(
      Array.from({ length: 10 }, (_, index) => signToken(`blackhole-${index}`)),
    );
    const answers = tokens.map((token) => create(gw.graphqlUrl, token));
    await sleep(500);
    proxy.blackHole({ newConnections: 'pause' });
    const signalled = performance.now();
    gw.child.kill('SIGTERM');
    const exit = await Promise.race([
      gw.exited,
      sleep(BLACK_HOLE_SHUTDOWN_TIMEOUT_MS + 10_000).then(() => ({
        code: 'still running',
        signal: null,
        at: performance.now(),
      })),
    ]);
    const exitSeconds = (exit.at - signalled) / 1000;
    const settled = await Promise.all(answers);
    const problems = gw
      .output()
      .split('\n')
      .filter((line) => /shutdown|stopped/.test(line));
    console.log(
      [
        `SIGTERM with Postgres black-holed: exit code ${exit.code} after ${exitSeconds.toFixed(1)} s (deadline ${BLACK_HOLE_SHUTDOWN_TIMEOUT_MS / 1000} s)`,
        `  answers ${JSON.stringify(countBy(settled.map((a) => a.typename ?? a.status)))}`,
        `  last words: ${problems.slice(-2).join(' | ').slice(0, 400)}`,
      ].join('\n'),
    );
    if (!/stopped in/.test(gw.output())) console.log(gw.output().slice(-4000));
    expect(exit.code).not.toBe('still running');
    expect(exitSeconds).toBeLessThan(BLACK_HOLE_SHUTDOWN_TIMEOUT_MS / 1000 + 1);
    expect(exit.code).not.toBe(0);
    expect(gw.output()).toMatch(/with problems|did not finish/);
  }, 120_000);
});
