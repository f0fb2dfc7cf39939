import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { createTestDatabase, hasPostgres, type TestDatabase } from '../helpers/database.js';
import { type GatewayProcess, spawnGatewayProcess } from '../helpers/gateway-process.js';

/**
 * A restarted instance is hit by every client's retry at once (a load balancer's probes too). While it starts
 * (here: while the S3 SDK loads, after the database is open), a configured port is not yet bound: a
 * connection is refused, which clients retry at no cost to the starting process. From the first connection it
 * accepts, it serves: no "starting" answers to take in, no connection that nobody answers.
 */
describe('a request while the gateway is still starting', () => {
  let kie: SimulatorServer;
  let database: TestDatabase | undefined;
  let gateway: GatewayProcess | undefined;

  beforeAll(async () => {
    kie = await startSimulatorServer({});
    if (hasPostgres()) database = await createTestDatabase('postgres');
  });
  afterAll(async () => {
    gateway?.kill();
    await kie?.close();
    await database?.dispose();
  });

  it('is refused until the gateway can serve it, then served: never answered "starting", never left hanging', async () => {
    gateway = await spawnGatewayProcess({
      kieUrl: kie.url,
      databaseUrl: database?.url,
      env: {
        RESULT_STORAGE: 's3',
        S3_BUCKET: 'videos',
        S3_ENDPOINT: 'http://127.0.0.1:9',
        S3_FORCE_PATH_STYLE: 'true',
        S3_ACCESS_KEY_ID: 'test',
        S3_SECRET_ACCESS_KEY: 'test-secret',
      },
    });
    const deadline = Date.now() + 60_000;
    let refused = 0;
    for (;;) {
      if (Date.now() > deadline) throw new Error(`never ready:\n${gateway.output()}`);
      if (gateway.child.exitCode !== null) throw new Error(`exited:\n${gateway.output()}`);
      const answer = await fetch(`${gateway.url}/healthz`, { signal: AbortSignal.timeout(5_000) }).then(
        (response) => response.status,
        (error: Error) => (error.name === 'TimeoutError' ? ('hung' as const) : ('refused' as const)),
      );
      expect(answer).not.toBe('hung');
      if (answer !== 'refused') {
        // The first answer of all is the served one.
        expect(answer).toBe(200);
        break;
      }
      refused++;
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    // The probe did run while the process started (it had not bound the port yet), not only after.
    expect(refused).toBeGreaterThan(0);
  }, 90_000);
});
