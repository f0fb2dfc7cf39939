import { createServer } from 'node:net';
import { decodeGlobalID } from '@pothos/plugin-relay';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { startSimulatorServer } from '../../src/upstream/simulator.js';
import { createTestDatabase, databaseKinds, type TestDatabase } from '../helpers/database.js';
import {
  createTaskOk,
  getTask,
  metric,
  sampleInput,
  startTestGateway,
  type TaskView,
  VIDEO_URL,
  waitForState,
} from '../helpers/gateway.js';

const wait = { timeout: 10_000, interval: 25 };

/** A port nothing listens on right now. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('no port');
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return address.port;
}

const sources = (task: TaskView) => task.events.map((event) => [event.state, event.source]);

// One database per kind for the whole file (an embedded PGlite takes seconds to start on a busy machine).
describe.each(databaseKinds())('on %s', (kind) => {
  let database: TestDatabase;
  const running: Array<{ stop(): Promise<void> }> = [];

  beforeAll(async () => {
    database = await createTestDatabase(kind);
  });
  afterEach(async () => {
    // Whatever a test left running, in reverse order of start; stopping twice is harmless.
    for (const thing of running.splice(0).reverse()) await thing.stop().catch(() => {});
  });
  afterAll(async () => {
    await database?.dispose();
  });

  async function gateway(kieUrl: string, env: Record<string, string> = {}) {
    const started = await startTestGateway({ database, kieUrl, env });
    running.push(started);
    return started;
  }
  async function simulator(options: Parameters<typeof startSimulatorServer>[0]) {
    const started = await startSimulatorServer(options);
    running.push({ stop: () => started.close() });
    return started;
  }

  it('finishes a task with another gateway after the first one stopped, although its callback was lost', async () => {
    // kie ends the task 300 ms after creating it; its callback then finds nobody listening.
    const kie = await simulator({ knobs: { stepMs: 100 } });
    const first = await gateway(kie.url, { POLL_MIN_DELAY_MS: '800' });
    const created = await createTaskOk(first);
    expect(created.state).toBe('WAITING');
    await first.stop();
    await vi.waitFor(() => expect(kie.simulator.stats.callbacksSent).toBe(1), wait);

    const second = await gateway(kie.url, { POLL_MIN_DELAY_MS: '800' });
    const task = await waitForState(second, created.id, 'SUCCEEDED');
    expect(task.videoUrl).toMatch(VIDEO_URL);
    expect(sources(task)).toEqual([
      ['PENDING', 'MUTATION'],
      ['WAITING', 'MUTATION'],
      ['SUCCEEDED', 'POLLER'],
    ]);
    // The second instance did it, and the task was sent to kie once.
    expect(
      await metric(second, 'avatar_gateway_task_transitions_total{state="SUCCEEDED",source="POLLER"}'),
    ).toBe(1);
    expect(kie.simulator.stats.creates).toBe(1);
  });

  it('takes a callback that arrives after a restart on the same address', async () => {
    const kie = await simulator({ knobs: { stepMs: 250 } });
    const first = await gateway(kie.url);
    const port = new URL(first.url).port;
    const created = await createTaskOk(first);
    await first.stop();
    // The helper's first poll is a minute away: only the callback can finish the task here.
    const second = await gateway(kie.url, { PORT: port });
    const task = await waitForState(second, created.id, 'SUCCEEDED');
    expect(task.events.at(-1)).toMatchObject({ state: 'SUCCEEDED', source: 'CALLBACK' });
    // Counted once kie has its answer, which can be a moment after the task is stored.
    await expect
      .poll(() => metric(second, 'avatar_gateway_callbacks_total{status="200"}'), { timeout: 5_000 })
      .toBe(1);
  });

  it('keeps a task PENDING while kie is unreachable, then submits it once kie is back', async () => {
    const port = await closedPort();
    const kieUrl = `http://127.0.0.1:${port}`;
    const gw = await gateway(kieUrl);
    const created = await createTaskOk(gw, sampleInput({ prompt: 'patience' }));
    expect(created).toMatchObject({ state: 'PENDING', upstreamTaskId: null, version: 1 });

    // The submit loop keeps trying while kie is down, and the task stays PENDING meanwhile.
    const id = decodeGlobalID(created.id).id;
    await vi.waitFor(async () => {
      const row = await gw.app.service.repository.findById(id);
      expect(row?.submitAttempts).toBeGreaterThanOrEqual(2);
    }, wait);
    const waiting = await getTask(gw, created.id);
    expect(waiting?.state).toBe('PENDING');
    expect(waiting?.events).toHaveLength(1);

    const kie = await simulator({ port, knobs: { stepMs: 50 } });
    expect(kie.url).toBe(kieUrl);
    const task = await waitForState(gw, created.id, 'SUCCEEDED');
    expect(sources(task)).toEqual([
      ['PENDING', 'MUTATION'],
      ['WAITING', 'POLLER'],
      ['SUCCEEDED', 'CALLBACK'],
    ]);
    expect(kie.simulator.stats.creates).toBe(1);
  });

  it('submits a task left PENDING by a stopped gateway from another one', async () => {
    const port = await closedPort();
    const first = await gateway(`http://127.0.0.1:${port}`);
    const created = await createTaskOk(first);
    expect(created.state).toBe('PENDING');
    await first.stop();

    const kie = await simulator({ port, knobs: { stepMs: 50 } });
    const second = await gateway(kie.url);
    const task = await waitForState(second, created.id, 'SUCCEEDED');
    expect(task.events.find((event) => event.state === 'WAITING')?.source).toBe('POLLER');
    expect(kie.simulator.stats.creates).toBe(1);
    expect(kie.simulator.stats.createRequests).toBe(1);
  });
});
