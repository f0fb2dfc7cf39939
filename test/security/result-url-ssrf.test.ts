import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeGlobalID } from '@pothos/plugin-relay';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StoredResultRow } from '../../src/db/schema.js';
import { StoredResultRepository } from '../../src/storage/repository.js';
import { postCallback, signCallback } from '../helpers/callbacks.js';
import { createTaskOk, getTask } from '../helpers/gateway.js';
import { type ProductionGateway, startProductionGateway } from './production-gateway.js';

const HMAC_KEY = 'result-url-ssrf-test-key';
const wait = { timeout: 10_000, interval: 50 };

/**
 * Issue 8, callbacks and the SSRF guard. Limit proved: kie's signature covers `taskId.timestamp`, not the
 * body, so a success callback's result URL is not trusted to be kie's. In production (ALLOW_PRIVATE_INPUT_URLS
 * false) the result copier fetches through the same SSRF guard as inputs: a result URL on the gateway's own
 * network is refused before any connection, and only kie's configured origin is reached wherever it is.
 */
describe('result URLs from a callback body', () => {
  let gateway: ProductionGateway;
  let internal: Server;
  let internalUrl: string;
  const internalRequests: string[] = [];

  beforeAll(async () => {
    // Stands for a service on the gateway's network (a metadata endpoint, an admin port).
    internal = createServer((req, res) => {
      internalRequests.push(req.url ?? '');
      res.writeHead(200, { 'content-type': 'video/mp4' }).end('internal secrets');
    });
    await new Promise<void>((resolve) => internal.listen(0, '127.0.0.1', resolve));
    internalUrl = `http://127.0.0.1:${(internal.address() as AddressInfo).port}`;
    gateway = await startProductionGateway({
      KIE_WEBHOOK_HMAC_KEY: HMAC_KEY,
      RESULT_COPY_ATTEMPTS: '1',
    });
  });
  afterAll(async () => {
    await gateway?.stop();
    await new Promise((resolve) => internal?.close(resolve));
  });

  /** A task kie accepted, then a signed success callback naming `resultUrl`; its stored-result row once settled. */
  async function succeedWith(resultUrl: (upstreamTaskId: string) => string): Promise<StoredResultRow> {
    const created = await createTaskOk(gateway, undefined, 'ssrf');
    const row = await gateway.app.service.repository.findById(decodeGlobalID(created.id).id);
    if (!row?.upstreamTaskId) throw new Error('the task was not submitted');
    const upstreamTaskId = row.upstreamTaskId;
    // kie serves a result only once its task has succeeded; a callback that outruns it would test nothing.
    await expect.poll(() => gateway.kie.simulator.taskState(upstreamTaskId), wait).toBe('success');
    const body = JSON.stringify({
      code: 200,
      msg: 'callback',
      data: {
        taskId: row.upstreamTaskId,
        state: 'success',
        resultJson: JSON.stringify({ resultUrls: [resultUrl(row.upstreamTaskId)] }),
      },
    });
    const signature = signCallback(row.upstreamTaskId, Math.floor(Date.now() / 1000), HMAC_KEY);
    expect(await postCallback(gateway, `${row.id}/${row.callbackSecret}`, body, signature)).toBe(200);
    expect((await getTask(gateway, created.id, 'ssrf'))?.state).toBe('SUCCEEDED');
    const results = new StoredResultRepository(gateway.app.database.db);
    let settled: StoredResultRow | undefined;
    await expect
      .poll(async () => {
        [settled] = await results.listForTasks([row.id]);
        return settled?.status;
      }, wait)
      .not.toBe('copying');
    if (!settled) throw new Error('no stored result row');
    return settled;
  }

  it('does not fetch a result URL on a private address: no request reaches it, the copy fails saying why', async () => {
    const settled = await succeedWith(() => `${internalUrl}/latest/meta-data/iam`);
    expect(internalRequests).toEqual([]);
    expect(settled.status).toBe('failed');
    expect(settled.lastError).toMatch(/non-public address \(127\.0\.0\.1, loopback\)/);
  });

  it("copies a result from kie's configured origin, though it is on localhost too", async () => {
    const settled = await succeedWith((upstreamTaskId) => `${gateway.kie.url}/results/${upstreamTaskId}.mp4`);
    expect(settled.status, `the copy failed: ${settled.lastError}`).toBe('stored');
    expect(settled.sizeBytes).toBeGreaterThan(0);
    expect(internalRequests).toEqual([]);
  });
});
