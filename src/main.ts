import { startApp } from './app.js';
import { ConfigError, loadConfig } from './config.js';

// The only module that exits the process.
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
      '  another user: npm run token -- <userId>',
    );
  }
  console.log(`${lines.join('\n')}\n`);

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`${signal}: stopping`);
    await app.stop();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
} catch (error) {
  console.error(`avatar-gateway failed to start: ${(error as Error).message}`);
  process.exit(1);
}
