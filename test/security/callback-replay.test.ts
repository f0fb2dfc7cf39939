import { decodeGlobalID } from '@pothos/plugin-relay';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { callbackBody, postCallback, signCallback } from '../helpers/callbacks.js';
import { databaseKinds, useTestDatabase } from '../helpers/database.js';
import { createTaskOk, getTask, startTestGateway, type TestGateway } from '../helpers/gateway.js';

const HMAC_KEY = 'replay-test-webhook-key';

const signed = (upstreamTaskId: string, timestamp = Math.floor(Date.now() / 1000)) =>
  signCallback(upstreamTaskId, timestamp, HMAC_KEY);

/**
 * seen 11. Limit proved: a callback signature (timestamp + signature) is accepted once, across instances.
 * kie's HMAC covers `taskId.timestamp`, not the body, so a valid callback's headers sent again with another
 * body inside the ±300 s window must change nothing; the answer is 200, as for any duplicate.
 */
describe.each(databaseKinds())('replayed callback signatures on %s', (kind) => {
  const database = useTestDatabase(kind);
  let kie: SimulatorServer;
  let gateways: TestGateway[] = [];

  beforeAll(async () => {
    // The simulator's own callbacks would come long after the test: only the test's reach the gateway.
    kie = await startSimulatorServer({ hmacKey: HMAC_KEY, knobs: { stepMs: 600_000 } });
    const env = { NODE_ENV: 'production', KIE_WEBHOOK_HMAC_KEY: HMAC_KEY };
    // Two instances on one database (PGlite: one embedded database shared in this process).
    gateways = [
      await startTestGateway({ database, kieUrl: kie.url, env }),
      await startTestGateway({ database, kieUrl: kie.url, env }),
    ];
  });
  afterAll(async () => {
    for (const gateway of gateways) await gateway.stop();
    await kie?.close();
  });

  it('applies a signed callback once; its headers with another body change nothing, on any instance', async () => {
    const [one, two] = gateways as [TestGateway, TestGateway];
    const created = await createTaskOk(one, undefined, 'replayed');
    const row = await one.app.service.repository.findById(decodeGlobalID(created.id).id);
    if (!row?.upstreamTaskId) throw new Error('the task was not submitted');
    const path = `${row.id}/${row.callbackSecret}`;
    const signedAt = Math.floor(Date.now() / 1000);
    const headers = signed(row.upstreamTaskId, signedAt);

    expect(await postCallback(one, path, callbackBody(row.upstreamTaskId, 'generating'), headers)).toBe(200);
    const generating = await getTask(one, created.id, 'replayed');
    expect(generating?.state).toBe('GENERATING');

    // The same signature with a forged result, and with a forged failure, on both instances.
    for (const gateway of [one, two]) {
      for (const state of ['success', 'fail']) {
        expect(await postCallback(gateway, path, callbackBody(row.upstreamTaskId, state), headers)).toBe(200);
        expect(await getTask(gateway, created.id, 'replayed')).toEqual(generating);
      }
    }

    // A callback signed afresh (another timestamp) is still taken.
    const fresh = signed(row.upstreamTaskId, signedAt - 2);
    expect(await postCallback(two, path, callbackBody(row.upstreamTaskId, 'success'), fresh)).toBe(200);
    const done = await getTask(one, created.id, 'replayed');
    expect(done?.state).toBe('SUCCEEDED');
    expect(done?.events.at(-1)).toMatchObject({ state: 'SUCCEEDED', source: 'CALLBACK' });
  });

  it("keeps a signature refused for its URL (wrong secret, unknown task) usable by kie's own callback", async () => {
    const [one] = gateways as [TestGateway, TestGateway];
    const created = await createTaskOk(one, undefined, 'misdirected');
    const row = await one.app.service.repository.findById(decodeGlobalID(created.id).id);
    if (!row?.upstreamTaskId) throw new Error('the task was not submitted');
    const headers = signed(row.upstreamTaskId);
    const body = callbackBody(row.upstreamTaskId, 'generating');

    expect(await postCallback(one, `${row.id}/not-the-secret`, body, headers)).toBe(401);
    expect(await postCallback(one, `${crypto.randomUUID()}/${row.callbackSecret}`, body, headers)).toBe(404);
    expect((await getTask(one, created.id, 'misdirected'))?.state).toBe('WAITING');

    expect(await postCallback(one, `${row.id}/${row.callbackSecret}`, body, headers)).toBe(200);
    expect((await getTask(one, created.id, 'misdirected'))?.state).toBe('GENERATING');
  });
});
