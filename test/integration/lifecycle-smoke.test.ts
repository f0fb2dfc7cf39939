import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startSimulatorServer, type SimulatorServer } from '../../src/upstream/simulator.js';
import { createTestDatabase, databaseKinds, type TestDatabase } from '../helpers/database.js';
import { createTaskOk, getTask, startTestGateway, type TestGateway } from '../helpers/gateway.js';

describe.each(databaseKinds())('task lifecycle on %s', (kind) => {
  let database: TestDatabase;
  let kie: SimulatorServer;
  let gateway: TestGateway;

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    kie = await startSimulatorServer({ knobs: { stepMs: 30 } });
    gateway = await startTestGateway({ database, kieUrl: kie.url });
  });
  afterAll(async () => {
    await gateway?.stop();
    await kie?.close();
    await database?.dispose();
  });

  it('reaches SUCCEEDED through the callback with its whole history', async () => {
    const created = await createTaskOk(gateway);
    expect(created.state).toBe('WAITING');
    await vi.waitFor(async () => expect((await getTask(gateway, created.id))?.state).toBe('SUCCEEDED'), {
      timeout: 5000,
      interval: 50,
    });
    const task = await getTask(gateway, created.id);
    expect(task?.videoUrl).toMatch(/\/results\/.+\.mp4$/);
    expect(task?.events.map((event) => [event.state, event.source])).toEqual([
      ['PENDING', 'MUTATION'],
      ['WAITING', 'MUTATION'],
      ['SUCCEEDED', 'CALLBACK'],
    ]);
    expect(kie.simulator.stats.creates).toBe(1);
  });
});
