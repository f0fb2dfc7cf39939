import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { databaseKinds, useTestDatabase } from '../helpers/database.js';
import {
  createTask,
  createTaskOk,
  getTask,
  sampleInput,
  startTestGateway,
  type TaskView,
  type TestGateway,
} from '../helpers/gateway.js';

// Creates beyond kie's account limit wait PENDING and go out as kie's window frees; RATE_LIMITED is left for
// a full queue, which a client must back off from. Each kind gets its own database: the window is shared by
// everything on one.
describe.each(databaseKinds())('the submit queue on %s', (kind) => {
  const database = useTestDatabase(kind);
  let kie: SimulatorServer;
  let gateway: TestGateway;

  beforeAll(async () => {
    kie = await startSimulatorServer({ knobs: { stepMs: 600_000 } });
    gateway = await startTestGateway({
      database,
      kieUrl: kie.url,
      env: { KIE_MAX_CREATES_PER_10S: '2', MAX_PENDING_SUBMITS: '2' },
    });
  });
  afterAll(async () => {
    await gateway?.stop();
    await kie?.close();
  });

  it('keeps creates beyond the limit PENDING, sends them as the window frees, and refuses past a full queue', async () => {
    const user = 'hasty';
    const first = await createTaskOk(gateway, sampleInput({ idempotencyKey: 'hasty-1' }), user);
    const second = await createTaskOk(gateway, sampleInput(), user);
    expect([first.state, second.state]).toEqual(['WAITING', 'WAITING']);
    const queued = [
      await createTaskOk(gateway, sampleInput(), user),
      await createTaskOk(gateway, sampleInput(), user),
    ];
    expect(queued.map((task) => [task.state, task.upstreamTaskId])).toEqual([
      ['PENDING', null],
      ['PENDING', null],
    ]);
    expect(kie.simulator.createdTasks()).toHaveLength(2);

    // The queue holds MAX_PENDING_SUBMITS: past it the client is told to back off, and nothing is stored.
    const refused = await createTask(gateway, sampleInput(), user);
    expect(refused).toMatchObject({ __typename: 'RateLimitedError', code: 'RATE_LIMITED' });
    const retryAfter = 'retryAfterSeconds' in refused ? (refused.retryAfterSeconds ?? 0) : 0;
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(10);
    // A retry of a create that already happened is answered from the database, queue full or not.
    const retried = await createTask(gateway, sampleInput({ idempotencyKey: 'hasty-1' }), user);
    expect('task' in retried && retried.task.id).toBe(first.id);

    for (const task of queued) {
      // A window (10 s) after the first two, plus a poll.
      const sent = await vi.waitFor(
        async () => {
          const current = await getTask(gateway, task.id, user);
          expect(current?.state).toBe('WAITING');
          return current as TaskView;
        },
        { timeout: 20_000, interval: 100 },
      );
      expect(sent.events.map((event) => [event.state, event.source])).toEqual([
        ['PENDING', 'MUTATION'],
        ['WAITING', 'POLLER'],
      ]);
    }
    const arrivals = kie.simulator.createdTasks().map((created) => created.at);
    expect(arrivals).toHaveLength(4);
    // kie saw the third create a whole window after the first.
    expect((arrivals[2] ?? 0) - (arrivals[0] ?? 0)).toBeGreaterThanOrEqual(10_000);
  }, 30_000);
});
