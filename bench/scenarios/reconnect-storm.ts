import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { callbackBody, callbackPath, type KieState, signatureHeaders } from '../lib/callback.js';
import { resultUrl, type SeedTask, waitingTask } from '../lib/database.js';
import {
  type Backoff,
  type FollowedUser,
  type Followers,
  openSseFollowers,
  openWsFollowers,
} from '../lib/followers.js';
import { httpRequest } from '../lib/http.js';
import { mapLimit } from '../lib/load.js';
import type { ServerProcess } from '../lib/processes.js';
import { describeRatios } from '../lib/runs.js';
import { seededRandom, summarize } from '../lib/stats.js';
import { signToken } from '../lib/tokens.js';
import { UpdateLedger } from '../lib/update-ledger.js';
import type { TaskChange } from '../processes/write-changes.js';
import type { ResultRow, Scenario, ScenarioContext } from './types.js';

/**
 * A reconnect storm: thousands of apps follow their users' tasks (`avatarTaskUpdated(since:)`, no id), the
 * server is killed (SIGKILL, a crash) and started again on the same port, and every app reconnects at once
 * with `since:` the last `updatedAt` it saw. While the server is down, 20% of the tasks change.
 *
 * The changes are written with the baselines' hand-written SQL (bench/baselines/sql.ts, the callback's very
 * statement: the update, the version bump and the event in one), by bench/processes/write-changes.ts, not by a second gateway
 * taking callbacks: a second server would share core 0 with the one being measured and start its own LISTEN,
 * poller and sweeps, and with the only instance down no one would hear a NOTIFY anyway.
 *
 * Measured per part (graphql-ws, then SSE), per side (the gateway, then the raw baseline in
 * bench/baselines/live.ts, each with users of its own): the seconds from the restarted server's `ready` (the
 * moment it reports, not when this busy process reads the message) until every client is connected again and
 * holds every change made while it was down; the database queries Postgres ran from the restart on (counted
 * by a proxy in front of Postgres, bench/processes/query-counter.ts), per reconnecting client; the server's
 * peak heap meanwhile. Then one signed callback per client for one of its tasks proves each is live, and
 * every task's versions are checked: each change once, in order. A full run does each part three times, the
 * sides taking turns, and reports the run with the median ratio; missed and duplicated updates, probes and
 * queries must hold in every run.
 */

const SHARE_CHANGED = 0.2;
/** graphql-ws's and the SSE loop's retry: 100 ms doubling up to 1 s, with full jitter. */
const BACKOFF: Backoff = { firstMs: 100, maxMs: 1_000 };
/** Heap samples while the storm lasts. */
const HEAP_SAMPLE_MS = 50;
const PROBE_SENDERS = 32;

const percent = (share: number) => `${(share * 100).toFixed(0)}%`;

/**
 * While the server is down every client's attempt fails, tens of thousands of them, and node makes each
 * refused connection an error with a stack trace that its streams then read (`err.stack`, formatted through
 * tsx's source maps): about 7% of this process's CPU from the kill to the storm's end (`--cpu-prof` on it),
 * taken from the clients it runs. No stacks in that window; the previous limit comes back after it.
 */
function withoutErrorStacks(): () => void {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  return () => {
    Error.stackTraceLimit = limit;
  };
}

/**
 * `BENCH_STORM_CLIENTS=<ws>,<sse>` overrides the client counts of either mode (0 leaves that part out), so one
 * part can be measured at full size without the other: `BENCH_STORM_CLIENTS=10000,0 npm run bench -- --only
 * reconnect-storm`.
 */
function clientCounts(quick: boolean): { ws: number; sse: number } {
  const counts = { ws: quick ? 500 : 10_000, sse: quick ? 200 : 2_000 };
  const override = process.env.BENCH_STORM_CLIENTS;
  if (!override) return counts;
  const [ws, sse] = override.split(',').map((count) => Number(count.trim()));
  const valid = (count: number | undefined): count is number => Number.isInteger(count) && (count ?? -1) >= 0;
  if (!valid(ws) || !valid(sse))
    throw new Error(`BENCH_STORM_CLIENTS must be "<ws>,<sse>", not "${override}"`);
  return { ws, sse };
}

interface StormUser extends FollowedUser {
  tasks: SeedTask[];
}

interface PartResult {
  clients: number;
  tasks: number;
  changed: number;
  /** Restarted server's process start → its ready. */
  startSeconds: number;
  /** Its ready → every client connected and holding every change. */
  stormSeconds: number;
  queries: number;
  queriesPerClient: number;
  peakHeapBytes: number;
  /** The server's CPU (user + system) from its ready to the storm's end, per reconnecting client. */
  cpuMsPerClient: number;
  /** That CPU over the storm's seconds: below 1, the server waited for its clients part of the time. */
  serverBusyShare: number;
  /**
   * How late this process's event loop ran, from the restart to the storm's end (p99 and max, ms). It holds
   * every client: a late loop is clients that reconnect later than their retry said, whatever the server does.
   */
  generatorLagMs: { p99: number; max: number };
  /** This process's CPU over the same seconds (1: one core's worth): near 1, the clients set the pace. */
  generatorBusyShare: number;
  reconnects: number;
  missed: number;
  duplicated: number;
  probes: number;
  probesArrived: number;
  probeP99Ms: number;
  errors: string[];
  /** graphql-ws: the close codes of sockets the restarted server had accepted, and how often each came. */
  closesAfterRestart: Record<number, number>;
}

type Transport = 'ws' | 'sse';

interface Side {
  label: 'gateway' | 'baseline';
  /** Starts the server (again, on `port` when given), its database connections through the counter. */
  start(port?: number): Promise<ServerProcess>;
}

/** Users with one to three tasks each (`first` tasks per user: 1, 2, 3, 1, 2, 3, ...). */
async function planUsers(prefix: string, count: number): Promise<StormUser[]> {
  return Promise.all(
    Array.from({ length: count }, async (_, index) => {
      const userId = `${prefix}-${index}`;
      const tasks = Array.from({ length: 1 + (index % 3) }, (_, position) =>
        waitingTask(userId, index * 3 + position),
      );
      return { token: await signToken(userId), tasks };
    }),
  );
}

/**
 * Which tasks change while the server is down, and to what: a seeded 20%. A user's first task moves one step
 * (QUEUING), so it is left unfinished for the probe; the others alternate between QUEUING and SUCCEEDED
 * (a finished task's update carries its video URL, which the gateway reads through its stored results).
 */
function planChanges(users: readonly StormUser[], seed: number): Array<{ task: SeedTask; state: KieState }> {
  const random = seededRandom(seed);
  const changes: Array<{ task: SeedTask; state: KieState }> = [];
  for (const user of users) {
    user.tasks.forEach((task, position) => {
      if (random() >= SHARE_CHANGED) return;
      changes.push({ task, state: position > 0 && changes.length % 2 === 1 ? 'success' : 'queuing' });
    });
  }
  return changes;
}

/**
 * Writes the changes from a process of its own on the dead server's core (bench/processes/write-changes.ts):
 * the load generator's core is saturated meanwhile by thousands of clients retrying their connections.
 */
async function writeChanges(
  context: ScenarioContext,
  changes: ReadonlyArray<{ task: SeedTask; state: KieState }>,
): Promise<void> {
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'reconnect-storm-')), 'changes.json');
  const list: TaskChange[] = changes.map(({ task, state }) => ({
    id: task.id,
    upstreamTaskId: task.upstreamTaskId,
    state,
    resultUrls: state === 'success' ? [resultUrl(task.upstreamTaskId)] : [],
  }));
  writeFileSync(file, JSON.stringify(list));
  try {
    const writer = await context.startHelper(
      'write-changes',
      'bench/processes/write-changes.ts',
      { DATABASE_URL: context.database.url, CHANGES: file },
      '0',
    );
    await writer.stop();
  } finally {
    rmSync(path.dirname(file), { recursive: true, force: true });
  }
}

async function waitUntil(what: string, deadlineMs: number, done: () => boolean): Promise<void> {
  const until = performance.now() + deadlineMs;
  while (!done()) {
    if (performance.now() > until) throw new Error(`${what} did not happen within ${deadlineMs / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function runPart(
  context: ScenarioContext,
  side: Side,
  transport: Transport,
  count: number,
  counter: ServerProcess,
): Promise<PartResult> {
  const log = (message: string) => context.log(`${side.label} ${transport}: ${message}`);
  const deadlineMs = context.quick ? 30_000 : 60_000;
  const users = await planUsers(`storm-${side.label}-${transport}`, count);
  const allTasks = users.flatMap((user) => user.tasks);
  await context.database.seed(allTasks);
  const ledger = new UpdateLedger();
  for (const task of allTasks) ledger.expect(task.globalId, task.version);

  let server = await side.start();
  const port = Number(new URL(server.url).port);
  const open = () =>
    transport === 'ws'
      ? openWsFollowers({
          wsUrl: `${server.url.replace(/^http/, 'ws')}/graphql`,
          users,
          ledger,
          backoff: BACKOFF,
        })
      : openSseFollowers({ url: `${server.url}/graphql`, users, ledger, backoff: BACKOFF });
  let followers: Followers | undefined;
  // Stopped in `finally` too: a storm that fails would leave it sampling this process for the rest of the run.
  let generatorLag: ReturnType<typeof monitorEventLoopDelay> | undefined;
  let restoreErrorStacks = () => {};
  try {
    followers = await open();
    await waitUntil('every first replay', deadlineMs, () => ledger.complete);
    log(`${count} clients hold their ${allTasks.length} tasks; killing the server`);

    await server.kill();
    const killedAt = performance.now();
    restoreErrorStacks = withoutErrorStacks();
    const changes = planChanges(users, transport === 'ws' ? 1 : 2);
    await writeChanges(context, changes);
    for (const { task } of changes) ledger.expect(task.globalId, task.version + 1);
    log(`${changes.length} tasks changed while it was down`);

    log(`changes written in ${((performance.now() - killedAt) / 1000).toFixed(1)} s; restarting`);
    const spawnedAt = performance.now();
    generatorLag = monitorEventLoopDelay({ resolution: 10 });
    generatorLag.enable();
    const generatorCpuAtSpawn = process.cpuUsage();
    const beforeStart = await counter.stats<{ queries: number }>();
    server = await side.start(port);
    // The server's own moment and CPU at ready: this process, busy with every client's retries, reads the
    // message later, and the clients the server took meanwhile would not count.
    const readyAt = server.ready.at;
    const readySeenAfterMs = performance.now() - readyAt;
    let peakHeap = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        peakHeap = Math.max(peakHeap, (await server.memory()).heapUsed);
        await new Promise((resolve) => setTimeout(resolve, HEAP_SAMPLE_MS));
      }
    })();
    const all = followers.followers;
    const closesBeforeRestart = new Map(followers.closeCodes);
    const reconnected = () => all.every((follower) => follower.connectedAt > killedAt);
    await waitUntil('the reconnect storm', deadlineMs, () => ledger.complete && reconnected());
    const doneAt = Math.max(ledger.lastExpectedAt, ...all.map((follower) => follower.connectedAt));
    const afterStorm = await counter.stats<{ queries: number }>();
    generatorLag.disable();
    const generatorCpu = process.cpuUsage(generatorCpuAtSpawn);
    const generatorMeasuredAt = performance.now();
    restoreErrorStacks();
    const cpuAfterStorm = await server.cpu();
    sampling = false;
    await sampler;
    const queries = afterStorm.queries - beforeStart.queries;
    const cpuMs = (cpuAfterStorm.micros - server.ready.cpuMicros) / 1000;
    const cpuMsPerClient = cpuMs / count;
    const serverBusyShare = cpuMs / (doneAt - readyAt);
    const generatorLagMs = {
      p99: generatorLag.percentile(99) / 1e6,
      max: generatorLag.max / 1e6,
    };
    const generatorBusyShare =
      (generatorCpu.user + generatorCpu.system) / 1000 / (generatorMeasuredAt - spawnedAt);
    log(
      `every client back with its replay ${((doneAt - readyAt) / 1000).toFixed(2)} s after ready (${((readyAt - server.ready.startedAt) / 1000).toFixed(2)} s from its process's start to ready, seen here ${readySeenAfterMs.toFixed(0)} ms later); ${queries} queries; server CPU ${cpuMsPerClient.toFixed(3)} ms per client, busy ${percent(serverBusyShare)} of the storm; this process busy ${percent(generatorBusyShare)} from the restart on, its loop late by p99 ${generatorLagMs.p99.toFixed(0)} ms, max ${generatorLagMs.max.toFixed(0)} ms; closes by code ${JSON.stringify(Object.fromEntries(followers.closeCodes))}`,
    );

    // One more change per client, through the server's own callback route: each must arrive.
    ledger.clearProbes();
    const probes = users.map((user) => user.tasks[0] as SeedTask);
    const changedFirst = new Set(changes.map(({ task }) => task.id));
    await mapLimit(probes, PROBE_SENDERS, async (task) => {
      const moved = changedFirst.has(task.id);
      const state: KieState = moved ? 'generating' : 'queuing';
      ledger.expect(task.globalId, task.version + (moved ? 2 : 1), performance.now());
      const answer = await httpRequest(
        'POST',
        `${server.url}${callbackPath(task.id, task.callbackSecret)}`,
        callbackBody(task.upstreamTaskId, state, ''),
        signatureHeaders(task.upstreamTaskId),
      );
      if (answer.status !== 200) followers?.errors.push(`probe callback answered ${answer.status}`);
    });
    await waitUntil('every probe', deadlineMs, () => ledger.complete).catch((error: Error) =>
      followers?.errors.push(error.message),
    );
    const latencies = ledger.probeLatencies();
    const probe = summarize(latencies);
    return {
      clients: count,
      tasks: allTasks.length,
      changed: changes.length,
      startSeconds: (readyAt - server.ready.startedAt) / 1000,
      stormSeconds: (doneAt - readyAt) / 1000,
      queries,
      queriesPerClient: queries / count,
      peakHeapBytes: peakHeap,
      cpuMsPerClient,
      serverBusyShare,
      generatorLagMs,
      generatorBusyShare,
      // Each client connects twice when all goes well: at the start, and once after the restart.
      reconnects: all.reduce((sum, follower) => sum + follower.connects, 0) - 2 * count,
      missed: ledger.missed,
      duplicated: ledger.duplicated,
      probes: probes.length,
      probesArrived: latencies.length,
      probeP99Ms: probe.p99,
      errors: [...new Set(followers.errors)].slice(0, 5),
      closesAfterRestart: Object.fromEntries(
        [...followers.closeCodes]
          .map(([code, count]) => [code, count - (closesBeforeRestart.get(code) ?? 0)] as const)
          .filter(([, count]) => count > 0),
      ),
    };
  } finally {
    generatorLag?.disable();
    restoreErrorStacks();
    await followers?.close();
    await server.stop();
  }
}

/** One run of a part: the gateway's storm and the baseline's, one after the other. */
interface StormRun {
  gateway: PartResult;
  baseline: PartResult;
}

/**
 * A full run repeats each part three times: one storm's seconds rest on a few busy moments of a shared machine
 * (the SSE part gave 1.47x to 1.93x of its baseline in single runs on one commit), so the run with the median
 * ratio is reported, with every run's ratio beside it, as the latency scenarios do (bench/lib/runs.ts).
 */
const runCount = (quick: boolean) => (quick ? 1 : 3);

const stormRatio = ({ gateway, baseline }: StormRun) => gateway.stormSeconds / baseline.stormSeconds;

function medianRun(runs: readonly StormRun[]): StormRun {
  const byRatio = [...runs].sort((a, b) => stormRatio(a) - stormRatio(b));
  return byRatio[Math.floor((byRatio.length - 1) / 2)] as StormRun;
}

function partRows(transport: Transport, median: StormRun, runs: readonly StormRun[]): ResultRow[] {
  const { gateway: g, baseline: b } = median;
  const scenario = 'reconnect-storm';
  const every = (check: (part: PartResult) => boolean) => runs.every((run) => check(run.gateway));
  const worst = (value: (part: PartResult) => number) => Math.max(...runs.map((run) => value(run.gateway)));
  const total = (value: (part: PartResult) => number) =>
    runs.reduce((sum, run) => sum + value(run.gateway), 0);
  const totalBaseline = (value: (part: PartResult) => number) =>
    runs.reduce((sum, run) => sum + value(run.baseline), 0);
  const ofRuns =
    runs.length > 1
      ? `the median of ${runs.length} runs, whose ratios were ${describeRatios(runs.map(stormRatio))}; in it, `
      : '';
  const overRuns = runs.length > 1 ? ` (the worst of ${runs.length} runs)` : '';
  const summedOverRuns = runs.length > 1 ? ` (summed over ${runs.length} runs)` : '';
  const who =
    transport === 'ws'
      ? `${g.clients.toLocaleString('en-US')} graphql-ws clients`
      : `${g.clients.toLocaleString('en-US')} SSE clients`;
  const ratio = stormRatio(median);
  const allArrived = (part: PartResult) => part.probesArrived === part.probes;
  return [
    {
      scenario,
      metric: `${transport}: s from restart (ready) until every client is live with its replay, ${who}`,
      unit: 's',
      gateway: g.stormSeconds,
      baseline: b.stormSeconds,
      ratio,
      target: '≤ 5 s and ≤ 1.5x',
      pass: g.stormSeconds <= 5 && ratio <= 1.5 && every(allArrived),
      note: `${transport}: ${ofRuns}${g.changed} of ${g.tasks} tasks changed while down (gateway), ${b.changed} of ${b.tasks} (baseline); live proven by a callback per client after the storm, arrived ${g.probesArrived}/${g.probes} (p99 ${g.probeP99Ms.toFixed(1)} ms) and ${b.probesArrived}/${b.probes} (p99 ${b.probeP99Ms.toFixed(1)} ms); connections beyond one per client after the restart: ${g.reconnects} and ${b.reconnects}; the restarted process took ${g.startSeconds.toFixed(2)} s and ${b.startSeconds.toFixed(2)} s from its process's start to ready; its CPU from ready to the storm's end, per client: ${g.cpuMsPerClient.toFixed(3)} ms and ${b.cpuMsPerClient.toFixed(3)} ms, busy ${percent(g.serverBusyShare)} and ${percent(b.serverBusyShare)} of the storm's seconds; the load generator (every client) busy ${percent(g.generatorBusyShare)} and ${percent(b.generatorBusyShare)} from the restart on, its event loop late by p99 ${g.generatorLagMs.p99.toFixed(0)} and ${b.generatorLagMs.p99.toFixed(0)} ms, max ${g.generatorLagMs.max.toFixed(0)} and ${b.generatorLagMs.max.toFixed(0)} ms, from the restart to the storm's end${transport === 'ws' ? `; sockets closed after the restart, by code: ${JSON.stringify(g.closesAfterRestart)} and ${JSON.stringify(b.closesAfterRestart)}` : ''}${g.errors.length > 0 ? `; gateway client errors: ${g.errors.join(' | ')}` : ''}${b.errors.length > 0 ? `; baseline client errors: ${b.errors.join(' | ')}` : ''}`,
    },
    {
      scenario,
      metric: `${transport}: database queries per reconnecting client`,
      unit: '',
      gateway: worst((part) => part.queriesPerClient),
      baseline: b.queriesPerClient,
      ratio: worst((part) => part.queriesPerClient) / b.queriesPerClient,
      target: '≤ 2',
      pass: every((part) => part.queriesPerClient <= 2),
      note: `${transport}: queries Postgres ran from the restart to the storm's end (the start's own included), counted by a proxy in front of it${overRuns}: ${worst((part) => part.queries)} and ${b.queries}`,
    },
    {
      scenario,
      metric: `${transport}: updates missed (changes while down, then probes)${summedOverRuns}`,
      unit: '',
      gateway: total((part) => part.missed),
      baseline: totalBaseline((part) => part.missed),
      ratio: null,
      target: '0',
      pass: every((part) => part.missed === 0),
    },
    {
      scenario,
      metric: `${transport}: updates duplicated or out of order${summedOverRuns}`,
      unit: '',
      gateway: total((part) => part.duplicated),
      baseline: totalBaseline((part) => part.duplicated),
      ratio: null,
      target: '0',
      pass: every((part) => part.duplicated === 0),
    },
    {
      scenario,
      metric: `${transport}: server's peak heap during the storm`,
      unit: 'MB',
      gateway: g.peakHeapBytes / 1e6,
      baseline: b.peakHeapBytes / 1e6,
      ratio: g.peakHeapBytes / b.peakHeapBytes,
      target: '',
      pass: null,
    },
  ];
}

export const reconnectStormScenario: Scenario = {
  name: 'reconnect-storm',
  // Four restarts per run, each a process start under a storm of retries: 22-25 s quick on a quiet machine
  // (one run), about 4 minutes full (three runs).
  timeoutMs: { quick: 120_000, full: 900_000 },
  async run(context) {
    const counts = clientCounts(context.quick);
    const counter = await context.startHelper('query-counter', 'bench/processes/query-counter.ts', {
      UPSTREAM: `${new URL(context.database.url).hostname}:${new URL(context.database.url).port || 5432}`,
    });
    // The servers reach Postgres through the counter: same database, same user, another address.
    const countedUrl = new URL(context.database.url);
    countedUrl.host = new URL(counter.url).host;
    const sides: Side[] = [
      {
        label: 'gateway',
        start: (port) =>
          context.startGateway({
            DATABASE_URL: countedUrl.toString(),
            ...(port ? { PORT: String(port), PUBLIC_URL: `http://127.0.0.1:${port}` } : {}),
          }),
      },
      {
        label: 'baseline',
        start: (port) =>
          context.startBaseline('live', {
            DATABASE_URL: countedUrl.toString(),
            ...(port ? { PORT: String(port) } : {}),
          }),
      },
    ];
    const rows: ResultRow[] = [];
    const details: Record<string, unknown> = {};
    for (const [transport, count] of [
      ['ws', counts.ws],
      ['sse', counts.sse],
    ] as const) {
      if (count === 0) continue;
      const runs: StormRun[] = [];
      for (let run = 0; run < runCount(context.quick); run++) {
        // Who goes first alternates, as in the latency scenarios' runs: a machine that slows down over the
        // scenario weighs on both sides alike.
        const order = run % 2 === 0 ? sides : [...sides].reverse();
        const results = new Map<Side['label'], PartResult>();
        for (const side of order) {
          results.set(side.label, await runPart(context, side, transport, count, counter));
          await context.database.truncate();
        }
        runs.push({
          gateway: results.get('gateway') as PartResult,
          baseline: results.get('baseline') as PartResult,
        });
      }
      const ratios = runs.map(stormRatio);
      const median = medianRun(runs);
      rows.push(...partRows(transport, median, runs));
      details[transport] = { ...median, runRatios: ratios, runs };
    }
    return { rows, details };
  },
};
