import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { createTestDatabase, hasPostgres, type TestDatabase } from '../helpers/database.js';
import {
  CREATE_TASK,
  sampleInput,
  signToken,
  startTestGateway,
  type TestGateway,
} from '../helpers/gateway.js';
import { type GatewayProcess, startGatewayProcess } from '../helpers/gateway-process.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';

const TASKS = 10;

describe.skipIf(!hasPostgres())('an instance killed while it works tasks', () => {
  let database: TestDatabase;
  let kie: SimulatorServer;
  let proxy: TcpProxy;
  let dying: GatewayProcess | undefined;
  let survivor: TestGateway | undefined;

  beforeAll(async () => {
    database = await createTestDatabase('postgres');
    // Tasks stay WAITING at kie and no callback comes: only polls move them.
    kie = await startSimulatorServer({ knobs: { stepMs: 600_000, callbackMode: 'drop' } });
    const target = new URL(kie.url);
    proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port) });
  });
  afterAll(async () => {
    dying?.kill();
    await survivor?.stop();
    await proxy?.close();
    await kie?.close();
    await database?.dispose();
  });

  it('has its tasks taken over by another instance within about 15 s', async () => {
    dying = await startGatewayProcess({
      databaseUrl: database.url ?? '',
      kieUrl: proxy.url(kie.url),
      // A batch (queries per second x interval) large enough to lease every task at once.
      env: {
        POLL_INTERVAL_MS: '200',
        POLL_MIN_DELAY_MS: '1000',
        POLL_MAX_DELAY_MS: '2000',
        KIE_MAX_QUERIES_PER_S: '100',
      },
    });
    for (let index = 0; index < TASKS; index++) {
      const response = await fetch(dying.graphqlUrl, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          authorization: `Bearer ${await signToken(`lease-${index}`)}`,
        },
        body: JSON.stringify({ query: CREATE_TASK, variables: { input: sampleInput() } }),
      });
      expect(response.status).toBe(200);
      await response.arrayBuffer();
    }
    // kie stops answering this instance: its polls hang, and it holds (and renews) the tasks' leases.
    proxy.pause();
    const sql = postgres(database.url ?? '', { max: 1, onnotice: () => {} });
    const leased = async () =>
      (
        await sql<Array<{ n: number }>>`select count(*)::int as n from avatar_tasks where lease_until > now()`
      )[0]?.n ?? 0;
    for (let waited = 0; (await leased()) < TASKS && waited < 100; waited++) await sleep(100);
    expect(await leased()).toBe(TASKS);

    // The survivor runs already, on kie directly; it cannot take the tasks while the lease holder lives.
    survivor = await startTestGateway({ database, kieUrl: kie.url, env: { POLL_INTERVAL_MS: '200' } });
    const queriesBefore = kie.simulator.stats.queries;
    const polls = () =>
      sql<Array<{ id: string; polls: number }>>`select id, poll_attempts as polls from avatar_tasks`;
    const before = new Map((await polls()).map((row) => [row.id, row.polls]));
    dying.child.kill('SIGKILL');
    const killed = performance.now();
    let taken = 0;
    while (performance.now() - killed < 40_000) {
      // Tasks polled since the kill: only the survivor can have done it.
      taken = (await polls()).filter((row) => row.polls > (before.get(row.id) ?? 0)).length;
      if (taken === TASKS) break;
      await sleep(250);
    }
    const seconds = (performance.now() - killed) / 1000;
    await sql.end();
    console.log(
      `instance killed holding ${TASKS} leases: ${taken} taken over and polled by the survivor after ${seconds.toFixed(1)} s ` +
        `(${kie.simulator.stats.queries - queriesBefore} queries); creates on kie ${kie.simulator.stats.creates}`,
    );
    expect(taken).toBe(TASKS);
    expect(seconds).toBeLessThan(15);
    expect(kie.simulator.stats.creates).toBe(TASKS);
  }, 90_000);
});
