import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { type GatewayProcess, spawnGatewayProcess, startGatewayProcess } from '../helpers/gateway-process.js';

/** The gateway's own process at start: what an operator sees for a bad or a risky configuration. */
describe('starting the gateway process', () => {
  let kie: SimulatorServer;
  const started: GatewayProcess[] = [];
  beforeAll(async () => {
    kie = await startSimulatorServer({ knobs: { stepMs: 50 } });
  });
  afterAll(async () => {
    for (const gateway of started) gateway.kill();
    await kie?.close();
  });

  it('stops on bad values with exit code 1 and one line naming each of them with its reason', async () => {
    const gateway = await spawnGatewayProcess({
      kieUrl: kie.url,
      env: { POLL_MIN_DELAY_MS: '-5', LOG_LEVEL: 'loud', MAX_QUERY_DEPTH: 'deep', AUTH_JWT_SECRET: 'short' },
    });
    started.push(gateway);
    expect((await gateway.exited).code).toBe(1);
    const lines = gateway.output().trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^Invalid configuration: /);
    for (const reason of [
      'POLL_MIN_DELAY_MS must be at least 0',
      'MAX_QUERY_DEPTH must be a whole number',
      'AUTH_JWT_SECRET must be at least 32 characters',
      'LOG_LEVEL ',
    ]) {
      expect(lines[0]).toContain(reason);
    }
    expect(lines[0]).not.toContain('short');
  });

  it('warns in production of the embedded PGlite and a PUBLIC_URL kie.ai cannot reach, and serves', async () => {
    const gateway = await startGatewayProcess({ kieUrl: kie.url });
    started.push(gateway);
    const warnings = gateway
      .output()
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as { level: number; msg: string })
      .filter((line) => line.msg.startsWith('configuration: '))
      .map((line) => line.msg);
    expect(warnings).toEqual([
      expect.stringMatching(/^configuration: DATABASE_URL is not set: the embedded PGlite/),
      expect.stringContaining(`configuration: PUBLIC_URL is ${gateway.url}: kie.ai cannot reach callbacks`),
      expect.stringMatching(/^configuration: METRICS_TOKEN is not set/),
    ]);
    expect((await fetch(`${gateway.url}/healthz`, { signal: AbortSignal.timeout(5_000) })).status).toBe(200);
    // An embedded PGlite's first start (creating and migrating it) takes a while on a busy machine.
  }, 90_000);
});
