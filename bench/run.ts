/**
 * `npm run bench [-- --quick] [--only <scenario>[,<scenario>]] [--profile]`
 *
 * Runs each hot path of the gateway next to a baseline that does the same work without GraphQL or an ORM, in
 * the same run, and prints the ratios as a Markdown table; the full results go to bench/results/. The gateway
 * and each baseline run in their own process on core 0; this process is the load generator on core 1.
 * Missed targets are results, not failures: the exit code is non-zero only when the harness itself broke.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { FakeKie } from './fake-kie.js';
import { DatabaseUnavailableError, prepareDatabase } from './lib/database.js';
import { buildGateway } from './lib/gateway-build.js';
import { closeIdleConnections } from './lib/http.js';
import { describeMachine } from './lib/machine.js';
import { pinLoadGenerator, repoRoot, type ServerProcess, startServer } from './lib/processes.js';
import { markdownTable, notes } from './lib/table.js';
import { BENCH_HMAC_KEY, BENCH_JWT_SECRET } from './lib/tokens.js';
import { callbacksScenario } from './scenarios/callbacks.js';
import { createScenario } from './scenarios/create.js';
import { fanOutScenario } from './scenarios/fan-out.js';
import { historyScenario } from './scenarios/history.js';
import { idleSubscribersScenario } from './scenarios/idle-subscribers.js';
import { memoryScenario } from './scenarios/memory.js';
import { pollerScenario } from './scenarios/poller.js';
import { reconnectStormScenario } from './scenarios/reconnect-storm.js';
import { sseScenario } from './scenarios/sse.js';
import type { ResultRow, Scenario, ScenarioContext } from './scenarios/types.js';

const scenarios: Scenario[] = [
  fanOutScenario,
  memoryScenario,
  idleSubscribersScenario,
  sseScenario,
  createScenario,
  callbacksScenario,
  historyScenario,
  pollerScenario,
  reconnectStormScenario,
];

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    profile: { type: 'boolean', default: false },
  },
});
const quick = values.quick ?? false;
const profile = values.profile ?? false;
const only = values.only?.split(',').map((name) => name.trim());
const unknown = only?.filter((name) => !scenarios.some((scenario) => scenario.name === name)) ?? [];
if (unknown.length > 0) {
  console.error(`unknown scenario ${unknown.join(', ')}; known: ${scenarios.map((s) => s.name).join(', ')}`);
  process.exit(2);
}
const selected = scenarios.filter((scenario) => !only || only.includes(scenario.name));
// A scenario that runs past this is a broken harness, not a slow gateway.
const scenarioTimeoutMs = quick ? 45_000 : 240_000;

const started = new Date();
// The 1-minute load average, sampled around every scenario: above the core count, other work shared the machine.
let busiest = loadavg()[0] ?? 0;
const sampleLoad = () => {
  const load = loadavg()[0] ?? 0;
  busiest = Math.max(busiest, load);
  return load;
};
const log = (message: string) =>
  console.error(`[bench ${((Date.now() - started.getTime()) / 1000).toFixed(1)}s] ${message}`);
const pinning = pinLoadGenerator();
log(
  pinning.pinned
    ? 'servers on core 0, load generator on core 1'
    : `not pinned (${pinning.cores} core(s) or no taskset): figures are noisier`,
);

log('building the gateway (npm run build): the bench runs dist/, as the image does');
buildGateway();

let database: Awaited<ReturnType<typeof prepareDatabase>>;
try {
  database = await prepareDatabase();
} catch (error) {
  if (!(error instanceof DatabaseUnavailableError)) throw error;
  console.error(
    `${error.message}\nThe bench needs a Postgres (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test).`,
  );
  // Locally a missing Postgres is the machine's business; in CI it means the bench did not run.
  process.exit(process.env.CI === 'true' ? 1 : 0);
}
const kie = await FakeKie.start();
const dataDir = mkdtempSync(path.join(tmpdir(), 'avatar-gateway-bench-'));

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

async function gatewayEnv(overrides: Record<string, string>): Promise<Record<string, string>> {
  // The port is chosen here so PUBLIC_URL (the callback base kie is given) can name it.
  const port = await freePort();
  return {
    NODE_ENV: 'production',
    HOST: '127.0.0.1',
    PORT: String(port),
    PUBLIC_URL: `http://127.0.0.1:${port}`,
    DATABASE_URL: database.url,
    DATA_DIR: dataDir,
    AUTH_JWT_SECRET: BENCH_JWT_SECRET,
    // The inputs are placeholder URLs; fetching them is not what is measured.
    CHECK_INPUT_URLS: 'false',
    KIE_API_KEY: 'bench-kie-key',
    KIE_API_URL: kie.url,
    KIE_WEBHOOK_HMAC_KEY: BENCH_HMAC_KEY,
    KIE_MAX_CREATES_PER_10S: '1000000',
    KIE_MAX_QUERIES_PER_S: '1000000',
    // The benchmarks' users create far more than a person would; the caps are not what is measured.
    MAX_ACTIVE_TASKS_PER_USER: '100000000',
    MAX_CREATES_PER_USER_PER_HOUR: '100000000',
    LOG_LEVEL: 'warn',
    MAX_SOCKETS_PER_USER: '1000',
    MAX_SUBSCRIPTIONS_PER_SOCKET: '1000',
    // Seeded and created tasks stay out of the poller's way unless a scenario wants it.
    POLL_MIN_DELAY_MS: '3600000',
    POLL_MAX_DELAY_MS: '3600000',
    // Watched tasks too: KIE_MAX_QUERIES_PER_S is lifted, so 10,000 subscribers would have their tasks polled
    // every 1.5 s, where production's limit holds that to 10 recordInfo a second.
    WATCHED_POLL_INTERVAL_MS: '3600000',
    ...overrides,
  };
}

const rows: ResultRow[] = [];
const details: Record<string, unknown> = {};
let broken = false;

for (const scenario of selected) {
  const processes: ServerProcess[] = [];
  const context: ScenarioContext = {
    quick,
    profile,
    database,
    kie,
    log: (message) => log(`${scenario.name}: ${message}`),
    async startGateway(env = {}) {
      const server = await startServer({
        name: `gateway-${scenario.name}`,
        script: 'bench/processes/gateway.mjs',
        env: await gatewayEnv(env),
        profile,
      });
      processes.push(server);
      return server;
    },
    async startBaseline(name, env = {}) {
      const server = await startServer({
        name: `baseline-${name}-${scenario.name}`,
        script: `bench/baselines/${name}.ts`,
        env: {
          AUTH_JWT_SECRET: BENCH_JWT_SECRET,
          KIE_WEBHOOK_HMAC_KEY: BENCH_HMAC_KEY,
          KIE_API_URL: kie.url,
          ...env,
        },
      });
      processes.push(server);
      return server;
    },
    async startHelper(name, script, env, cores = '0,1') {
      const server = await startServer({ name: `${name}-${scenario.name}`, script, env, cores });
      processes.push(server);
      return server;
    },
  };
  log(`${scenario.name}: start`);
  const loadBefore = sampleLoad();
  const begin = performance.now();
  let timer: NodeJS.Timeout | undefined;
  try {
    await database.truncate();
    kie.reset({ callbacks: 'drop' });
    const timeoutMs = (quick ? scenario.timeoutMs?.quick : scenario.timeoutMs?.full) ?? scenarioTimeoutMs;
    const result = await Promise.race([
      scenario.run(context),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`took longer than ${timeoutMs / 1000} s`)), timeoutMs);
      }),
    ]);
    rows.push(...result.rows);
    details[scenario.name] = {
      ...result.details,
      seconds: (performance.now() - begin) / 1000,
      loadAverage: { before: loadBefore, after: sampleLoad() },
    };
  } catch (error) {
    broken = true;
    const message = (error as Error).stack ?? String(error);
    log(`${scenario.name}: BROKEN ${message}`);
    rows.push({
      scenario: scenario.name,
      metric: 'harness',
      unit: '',
      gateway: null,
      baseline: null,
      ratio: null,
      target: 'runs',
      pass: false,
      note: `the scenario broke: ${(error as Error).message}`,
    });
    details[scenario.name] = { error: message };
  } finally {
    clearTimeout(timer);
    await Promise.all(processes.map((server) => server.stop()));
    closeIdleConnections();
  }
  log(`${scenario.name}: done in ${((performance.now() - begin) / 1000).toFixed(1)} s`);
}

await kie.close();
await database.close();

const finished = new Date();
const wallSeconds = (finished.getTime() - started.getTime()) / 1000;
const table = markdownTable(rows);
const noteLines = notes(rows);
console.log(`\n## avatar-gateway bench (${quick ? 'quick' : 'full'}, ${wallSeconds.toFixed(0)} s)\n`);
console.log(table);
if (noteLines) console.log(`\n${noteLines}`);
sampleLoad();
if (busiest > pinning.cores) {
  console.log(
    `\nNote: the load average reached ${busiest.toFixed(1)} on ${pinning.cores} cores: other work shared the machine, so tails (p99) are noisy; ratios from the same run hold better.`,
  );
}

const report = {
  startedAt: started.toISOString(),
  finishedAt: finished.toISOString(),
  wallSeconds,
  mode: quick ? 'quick' : 'full',
  only: only ?? null,
  machine: describeMachine(pinning.pinned),
  /** The highest 1-minute load average seen around the scenarios: above the core count, the machine was shared. */
  busiestLoadAverage: busiest,
  rows,
  details,
};
const resultsDir = path.join(repoRoot, 'bench/results');
mkdirSync(resultsDir, { recursive: true });
const file = path.join(resultsDir, `${started.toISOString().replace(/[:]/g, '-')}.json`);
const json = `${JSON.stringify(report, null, 2)}\n`;
writeFileSync(file, json);
// latest.json is committed next to the README's table, so only a full run of every scenario replaces it.
const complete = !quick && !only;
if (complete) writeFileSync(path.join(resultsDir, 'latest.json'), json);
console.log(`\nresults: ${path.relative(repoRoot, file)}${complete ? ' and bench/results/latest.json' : ''}`);
const missed = rows.filter((row) => row.pass === false).length;
if (missed > 0) console.log(`${missed} target(s) missed: reported above, not a failure of the run.`);
process.exit(broken ? 1 : 0);
