import { startApp } from './app.js';
import { ConfigError, loadConfig } from './config.js';

// The only module that exits the process.

/** What the process keeps back from SHUTDOWN_TIMEOUT_MS for its last log lines and its exit. */
const EXIT_MARGIN_MS = 500;
/** After a signal, the listening socket stays open this long (see DrainOptions.listenGraceMs). */
const LISTEN_GRACE_MS = 1_000;
let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig();
} catch (error) {
  if (error instanceof ConfigError) {
    console.error(error.message);
    process.exit(1);
  }
  throw error;
}

// Registered before anything starts, so the first request is traced too.
const tracing = config.tracing
  ? (await import('./telemetry/exporter.js')).startTracing(config.tracing)
  : undefined;

try {
  const app = await startApp(config);
  const lines = [
    '',
    `  avatar-gateway is ready: ${app.publicUrl}/graphql  (GraphiQL in a browser)`,
    `  database: ${config.databaseUrl ? 'Postgres (DATABASE_URL)' : `embedded PGlite in ${config.dataDir}/pglite`}`,
    `  upstream: ${app.simulator ? `built-in kie simulator (${config.simulatorStepMs} ms per state)` : config.kie.apiUrl}`,
  ];
  if (app.developmentToken) {
    lines.push(
      '  development token for user "developer" (GraphiQL has it filled in already):',
      `  Authorization: Bearer ${app.developmentToken}`,
      '  another user: npm run -s token -- <userId>',
    );
  }
  console.log(`${lines.join('\n')}\n`);

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    const deadlineMs = config.shutdownTimeoutMs;
    console.log(`${signal}: draining, exiting within ${deadlineMs} ms`);
    // While draining, a stray rejection (a query on a connection torn down under it) must not cut the drain
    // short: it is logged and makes the exit non-zero instead.
    let strayErrors = 0;
    process.on('unhandledRejection', (reason) => {
      strayErrors += 1;
      console.error(`unhandled rejection while draining: ${String((reason as Error)?.message ?? reason)}`);
    });
    // The backstop: whatever hangs, the process is gone by the deadline. The drain itself ends a little
    // earlier, so this fires only if something outside it does not let go.
    setTimeout(() => {
      console.error(`shutdown did not finish within ${deadlineMs} ms; exiting`);
      process.exit(1);
    }, deadlineMs).unref();
    const report = await app
      .stop({ deadlineMs: Math.max(1, deadlineMs - EXIT_MARGIN_MS), listenGraceMs: LISTEN_GRACE_MS })
      .catch((error: unknown) => ({
        clean: false,
        problems: [String((error as Error)?.message ?? error)],
        ms: 0,
      }));
    const problems = [
      ...report.problems,
      ...(strayErrors > 0 ? [`${strayErrors} unhandled rejection(s)`] : []),
    ];
    // The last spans out, within what is left of the deadline.
    await tracing?.shutdown().catch(() => {});
    if (problems.length === 0) console.log(`stopped cleanly in ${report.ms} ms`);
    else console.error(`stopped in ${report.ms} ms, with problems: ${problems.join('; ')}`);
    process.exit(problems.length === 0 ? 0 : 1);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
} catch (error) {
  console.error(`avatar-gateway failed to start: ${(error as Error).message}`);
  process.exit(1);
}
