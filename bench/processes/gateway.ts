/**
 * The gateway as the bench runs it: its own process, started with
 * `node --expose-gc --import tsx bench/processes/gateway.ts` and forked with IPC by bench/lib/processes.ts.
 * The configuration comes only from BENCH_ENV, through the same `loadConfig` as `npm start`.
 */
import { startApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { benchEnv, reportFailure, reportReady } from '../lib/child.js';

try {
  const app = await startApp(loadConfig(benchEnv()));
  reportReady(app.url, {
    stop: async () => {
      await app.stop();
    },
  });
} catch (error) {
  reportFailure(error);
}
