import { decodeGlobalID } from '@pothos/plugin-relay';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { useTestDatabase } from '../helpers/database.js';
import { createTaskOk, getTask, startTestGateway, type TestGateway } from '../helpers/gateway.js';

const FORGED_VIDEO = 'https://attacker.example/forged.mp4';

const forgedSuccess = (upstreamTaskId: string) =>
  JSON.stringify({
    code: 200,
    msg: 'callback',
    data: {
      taskId: upstreamTaskId,
      state: 'success',
      resultJson: JSON.stringify({ resultUrls: [FORGED_VIDEO] }),
    },
  });

/**
 * Issue 8, callbacks. Limit proved: without KIE_WEBHOOK_HMAC_KEY nothing but the URL's secret vouches for a
 * callback, so a success callback is confirmed with one recordInfo (CONFIRM_CALLBACKS, on by default then)
 * and kie's own answer is what is stored: a leaked callback URL cannot plant a result.
 */
describe('confirmed success callbacks (no HMAC key)', () => {
  const database = useTestDatabase('pglite');
  let kie: SimulatorServer;
  let gateway: TestGateway;

  beforeAll(async () => {
    kie = await startSimulatorServer({ knobs: { stepMs: 600_000 } });
    gateway = await startTestGateway({ database, kieUrl: kie.url, env: { NODE_ENV: 'production' } });
  });
  afterAll(async () => {
    await gateway?.stop();
    await kie?.close();
  });

  it("stores what kie says, not a forged body's result, at the cost of one query", async () => {
    const created = await createTaskOk(gateway, undefined, 'leaky');
    const row = await gateway.app.service.repository.findById(decodeGlobalID(created.id).id);
    if (!row?.upstreamTaskId) throw new Error('the task was not submitted');
    const queriesBefore = kie.simulator.stats.queries;
    const response = await fetch(`${gateway.url}/callbacks/kie/${row.id}/${row.callbackSecret}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: forgedSuccess(row.upstreamTaskId),
    });
    expect(response.status).toBe(200);
    expect(kie.simulator.stats.queries - queriesBefore).toBe(1);
    const task = await getTask(gateway, created.id, 'leaky');
    // kie says the task is still waiting: nothing moved, no result stored.
    expect(task).toMatchObject({ state: 'WAITING', resultUrls: [], videoUrl: null });
  });

  it('refuses a success callback for a task kie does not know, and stores nothing', async () => {
    const created = await createTaskOk(gateway, undefined, 'leaky');
    const row = await gateway.app.service.repository.findById(decodeGlobalID(created.id).id);
    if (!row) throw new Error('no task');
    // A claim for a kie id that kie never issued (the task's own one is not yet known to the forger).
    await gateway.app.service.repository.patch(row.id, { upstreamTaskId: null, submitStatus: 'unknown' });
    const response = await fetch(`${gateway.url}/callbacks/kie/${row.id}/${row.callbackSecret}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: forgedSuccess('task_kling_forged'),
    });
    expect(response.status).toBe(401);
    const task = await getTask(gateway, created.id, 'leaky');
    expect(task).toMatchObject({ resultUrls: [], videoUrl: null });
    expect(task?.state).not.toBe('SUCCEEDED');
  });
});
