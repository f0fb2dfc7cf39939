import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { createTestDatabase, hasPostgres, type TestDatabase } from '../helpers/database.js';
import { createTask, sampleInput, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { taskRow } from '../helpers/subscriptions.js';

// Two instances on one database need a real Postgres.
describe.skipIf(!hasPostgres())('submits whose outcome used to be unknown', () => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase('postgres');
  });
  afterAll(async () => {
    await database?.dispose();
  });

  it('a connection never established is "not sent": the task waits queued, to be sent again', async () => {
    // Accepts TCP and never answers the TLS handshake: undici's connect timeout, before any request byte.
    const silent = net.createServer(() => {});
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as net.AddressInfo).port;
    const gateway = await startTestGateway({
      database,
      kieUrl: `https://127.0.0.1:${port}`,
      env: { KIE_CONNECT_TIMEOUT_MS: '300', KIE_REQUEST_TIMEOUT_MS: '2000', KIE_CREATE_TIMEOUT_MS: '2000' },
    });
    try {
      const created = await createTask(gateway, sampleInput(), 'connect-timeout-user');
      expect(created.__typename).toBe('CreateAvatarTaskSuccess');
      const row = await taskRow(gateway, (created as { task: { id: string } }).task.id);
      console.log(
        `connect timeout: task ${row.state}, submit ${row.submitStatus} after ${row.submitAttempts} attempt(s)`,
      );
      expect([row.state, row.submitStatus]).toEqual(['PENDING', 'queued']);
    } finally {
      await gateway.stop();
      silent.close();
    }
  });

  describe('a create that kie answers slowly', () => {
    let kie: SimulatorServer;
    let submitter: TestGateway;
    let poller: TestGateway;
    let own: TestDatabase;
    beforeAll(async () => {
      own = await createTestDatabase('postgres');
      kie = await startSimulatorServer({
        knobs: { createDelayMs: 4_000, stepMs: 60_000, callbackMode: 'drop' },
      });
      // Queries time out after 2 s, creates get their own, longer wait; leases are a second, renewed.
      const env = { KIE_REQUEST_TIMEOUT_MS: '2000', KIE_CREATE_TIMEOUT_MS: '15000', TASK_LEASE_MS: '1000' };
      submitter = await startTestGateway({ database: own, kieUrl: kie.url, env });
      poller = await startTestGateway({ database: own, kieUrl: kie.url, env });
    });
    afterAll(async () => {
      await submitter?.stop();
      await poller?.stop();
      await kie?.close();
      await own?.dispose();
    });

    it('gets its answer, and no other instance takes it for abandoned meanwhile', async () => {
      const user = 'slow-create-user';
      const seen = new Set<string>();
      let watching = true;
      // What another instance's poller could do to the row while the create waits on kie.
      const watch = (async () => {
        while (watching) {
          const rows = await poller.app.service.repository.listUpdatedSince(user, new Date(0));
          for (const row of rows) seen.add(row.submitStatus);
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      })();
      const started = performance.now();
      const created = await createTask(submitter, sampleInput(), user);
      const seconds = (performance.now() - started) / 1000;
      watching = false;
      await watch;
      const task = (created as { task?: { id: string; state: string } }).task;
      const row = await taskRow(submitter, task?.id ?? '');
      console.log(
        `slow create: answered in ${seconds.toFixed(1)} s, task ${row.state}/${row.submitStatus}, ` +
          `statuses seen ${[...seen].join(',')}, creates on kie ${kie.simulator.stats.creates}`,
      );
      expect(task?.state).toBe('WAITING');
      expect(row.submitStatus).toBe('accepted');
      expect(seen.has('unknown')).toBe(false);
      expect(kie.simulator.stats.creates).toBe(1);
    });
  });
});
