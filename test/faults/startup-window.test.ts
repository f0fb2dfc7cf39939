import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { createTestDatabase, hasPostgres, type TestDatabase } from '../helpers/database.js';
import { type GatewayProcess, spawnGatewayProcess } from '../helpers/gateway-process.js';

/**
 * The port is bound a while before the gateway's handler is in place (here: while the S3 SDK loads). A load
 * balancer's probe or a client's retry that lands in that window must get an answer, not a connection that
 * nobody ever answers.
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

  it('is answered (503 with Retry-After, then 200), never left hanging', async () => {
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
    const answers: number[] = [];
    const deadline = Date.now() + 60_000;
    // From the first moment the port accepts, every probe must be answered within a few seconds.
    while (!answers.includes(200)) {
      if (Date.now() > deadline) throw new Error(`never ready:\n${gateway.output()}`);
      if (gateway.child.exitCode !== null) throw new Error(`exited:\n${gateway.output()}`);
      const answer = await fetch(`${gateway.url}/healthz`, { signal: AbortSignal.timeout(5_000) }).then(
        async (response) => ({ status: response.status, retryAfter: response.headers.get('retry-after') }),
        (error: Error) => (error.name === 'TimeoutError' ? ('hung' as const) : ('refused' as const)),
      );
      expect(answer).not.toBe('hung');
      if (answer === 'refused' || answer === 'hung') {
        await new Promise((resolve) => setTimeout(resolve, 2));
        continue;
      }
      if (answer.status === 503) expect(answer.retryAfter).toBe('1');
      answers.push(answer.status);
    }
    expect(answers.every((status) => status === 200 || status === 503)).toBe(true);
  }, 90_000);
});
