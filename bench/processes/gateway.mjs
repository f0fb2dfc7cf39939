/**
 * The gateway as the bench runs it: its own process, started with `node --expose-gc
 * bench/processes/gateway.mjs` and forked with IPC by bench/lib/processes.ts. Plain JavaScript, run by plain
 * node, loading the gateway from dist/ as the image runs `node dist/main.js` (bench/run.ts builds it first: see
 * bench/lib/gateway-build.ts). The configuration comes only from BENCH_ENV, through the same `loadConfig` as
 * `npm start`.
 *
 * The gateway's modules load before tsx is: with tsx's loader registered first (`--import tsx`), each of
 * their imports went through its hooks thread, and a gateway restarted in the reconnect storm was ready 2.7-2.8
 * s after its process started, against 1.5-1.9 s this way (about 1 s for `node dist/main.js` on a quiet
 * machine), while every client kept retrying. tsx then loads only the bench's own IPC module, TypeScript.
 */
import { tsImport } from 'tsx/esm/api';

const gateway = await Promise.all([import('../../dist/app.js'), import('../../dist/config.js')]).catch(
  (error) => ({ error }),
);
/** @type {typeof import('../lib/child.js')} */
const { benchEnv, reportFailure, reportReady } = await tsImport('../lib/child.ts', import.meta.url);

try {
  if ('error' in gateway) throw gateway.error;
  /** @type {[typeof import('../../src/app.js'), typeof import('../../src/config.js')]} */
  const [{ startApp }, { loadConfig }] = gateway;
  const app = await startApp(loadConfig(benchEnv()));
  reportReady(app.url, {
    stop: async () => {
      await app.stop();
    },
  });
} catch (error) {
  reportFailure(error);
}
