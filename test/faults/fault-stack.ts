import { afterEach } from 'vitest';
import {
  type SimulatorKnobs,
  type SimulatorServer,
  startSimulatorServer,
} from '../../src/upstream/simulator.js';
import type { TestDatabase } from '../helpers/database.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';

/**
 * Short deadlines for the fault tests (the defaults are seconds longer), so a run stays quick; each is the
 * variable a deployment would set.
 */
export const FAULT_DEADLINES = {
  // Longer than the connect deadline: the shared test server's commits can take seconds under load.
  DB_STATEMENT_TIMEOUT_MS: '3000',
  DB_CONNECT_TIMEOUT_MS: '1000',
  DB_LISTEN_HEARTBEAT_MS: '300',
  POLL_TICK_TIMEOUT_MS: '2000',
  POLL_WORK_TIMEOUT_MS: '4000',
  KIE_REQUEST_TIMEOUT_MS: '1000',
} as const;

export interface FaultStack {
  proxy: TcpProxy;
  kie: SimulatorServer;
  gateway: TestGateway;
}

/**
 * A production-configured gateway whose every database connection goes through a TCP proxy in front of the
 * test database, with a standalone kie simulator; everything is stopped after each test.
 */
export function useFaultStack(database: TestDatabase) {
  const running: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const stop of running.splice(0).reverse()) await stop().catch(() => {});
  });
  // FAULT_LOG_LEVEL=warn shows the gateway's logs while a fault test runs.
  const logLevel = process.env.FAULT_LOG_LEVEL ?? 'silent';
  return async (knobs: Partial<SimulatorKnobs>, env: Record<string, string> = {}): Promise<FaultStack> => {
    const url = database.url;
    if (!url) throw new Error('the fault tests need a real Postgres (TEST_DATABASE_URL)');
    const target = new URL(url);
    const proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
    running.push(() => proxy.close());
    const kie = await startSimulatorServer({ knobs });
    running.push(() => kie.close());
    const gateway = await startTestGateway({
      kieUrl: kie.url,
      env: {
        NODE_ENV: 'production',
        DATABASE_URL: proxy.url(url),
        LOG_LEVEL: logLevel,
        ...FAULT_DEADLINES,
        ...env,
      },
    });
    // The proxy lets everything through again first, so the gateway can stop cleanly.
    running.push(async () => {
      proxy.pass();
      await gateway.stop();
    });
    return { proxy, kie, gateway };
  };
}

/** Runs `work` and measures how long it took, in milliseconds. */
export async function timed<T>(work: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const started = performance.now();
  const value = await work();
  return { ms: Math.round(performance.now() - started), value };
}
