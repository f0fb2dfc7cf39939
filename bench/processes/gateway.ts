/**
 * The gateway as the bench runs it: its own process, started with
 * `node --expose-gc --import tsx bench/processes/gateway.ts` and forked with IPC by bench/lib/processes.ts.
 * The gateway itself is loaded from dist/, as the image runs it (bench/run.ts builds it first: see
 * bench/lib/gateway-build.ts); this launcher and its IPC go through tsx. The configuration comes only from
 * BENCH_ENV, through the same `loadConfig` as `npm start`.
 */
import { benchEnv, reportFailure, reportReady } from '../lib/child.js';

// Paths held in variables: the types come from the sources, the code from their build.
const appModule = '../../dist/app.js';
const configModule = '../../dist/config.js';

try {
  const { startApp } = (await import(appModule)) as typeof import('../../src/app.js');
  const { loadConfig } = (await import(configModule)) as typeof import('../../src/config.js');
  const app = await startApp(loadConfig(benchEnv()));
  reportReady(app.url, {
    stop: async () => {
      await app.stop();
    },
  });
} catch (error) {
  reportFailure(error);
}
