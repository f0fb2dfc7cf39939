import { randomUUID } from 'node:crypto';
import { decodeGlobalID } from '@pothos/plugin-relay';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { callbackBody, FORGED_VIDEO, postCallback, signCallback } from '../helpers/callbacks.js';
import { databaseKinds, useTestDatabase } from '../helpers/database.js';
import {
  createTaskOk,
  getTask,
  metric,
  startTestGateway,
  type TaskView,
  type TestGateway,
  waitForState,
} from '../helpers/gateway.js';

const wait = { timeout: 10_000, interval: 25 };
const HMAC_KEY = 'callback-test-webhook-key';

interface Target {
  /** The gateway's own task id, as in the callback path. */
  id: string;
  globalId: string;
  secret: string;
  upstreamTaskId: string;
}

/** A created task and what kie would know about it: its callback path and its kie id. */
async function target(gateway: TestGateway, task: TaskView): Promise<Target> {
  const id = decodeGlobalID(task.id).id;
  const row = await gateway.app.service.repository.findById(id);
  if (!row?.upstreamTaskId) throw new Error(`task ${id} was not submitted`);
  return { id, globalId: task.id, secret: row.callbackSecret, upstreamTaskId: row.upstreamTaskId };
}

const sign = (upstreamTaskId: string, timestamp: number, key = HMAC_KEY) =>
  signCallback(upstreamTaskId, timestamp, key);

const nowSeconds = () => Math.floor(Date.now() / 1000);

/**
 * What a client can see change: anything here differing means a callback was applied. The results are kie's
 * URLs as the task records them: the API's links switch to the gateway's copy whenever the copier is done.
 */
async function visible(gateway: TestGateway, id: string) {
  const task = await getTask(gateway, id);
  if (!task) throw new Error(`task ${id} vanished`);
  const row = await gateway.app.service.repository.findById(decodeGlobalID(id).id);
  if (!row) throw new Error(`task ${id} has no row`);
  return {
    state: task.state,
    version: task.version,
    updatedAt: task.updatedAt,
    resultUrls: row.resultUrls,
    failure: task.failure,
    upstreamTaskId: task.upstreamTaskId,
    events: task.events.length,
  };
}

const acceptedCallbacks = (gateway: TestGateway) =>
  metric(gateway, 'avatar_gateway_callbacks_total{status="200"}');

// One database per kind for the whole file (an embedded PGlite takes seconds to start on a busy machine);
// each block runs its own simulator and gateway, stopped before the next block starts.
describe.each(databaseKinds())('on %s', (kind) => {
  const database = useTestDatabase(kind);

  describe('kie callbacks', () => {
    let kie: SimulatorServer;
    let gateway: TestGateway;

    beforeAll(async () => {
      kie = await startSimulatorServer({ knobs: { stepMs: 50 } });
      // The helper's first poll comes a minute after submit: here only callbacks move tasks. These tests send
      // kie's callbacks by hand, results included, so success callbacks are not confirmed with kie here
      // (test/security/callback-confirmation.test.ts covers that).
      gateway = await startTestGateway({ database, kieUrl: kie.url, env: { CONFIRM_CALLBACKS: 'false' } });
    });
    afterAll(async () => {
      await gateway?.stop();
      await kie?.close();
    });
    afterEach(() => {
      kie.simulator.knobs.callbackMode = 'normal';
      kie.simulator.knobs.stepMs = 50;
    });

    /** A task kie keeps busy for minutes, so any state change in it came from a callback of ours. */
    async function runningTask(): Promise<Target> {
      kie.simulator.knobs.stepMs = 600_000;
      const task = await createTaskOk(gateway);
      kie.simulator.knobs.stepMs = 50;
      expect(task.state).toBe('WAITING');
      return target(gateway, task);
    }

    it('applies a duplicated callback once', async () => {
      kie.simulator.knobs.callbackMode = 'duplicate';
      const acceptedBefore = await acceptedCallbacks(gateway);
      const created = await createTaskOk(gateway);
      const first = await waitForState(gateway, created.id, 'SUCCEEDED');
      // Both copies were answered 200 before the task is looked at again.
      await vi.waitFor(async () => expect(await acceptedCallbacks(gateway)).toBe(acceptedBefore + 2), wait);
      const task = await getTask(gateway, created.id);
      expect(task?.version).toBe(first.version);
      expect(task?.version).toBe(3);
      expect(task?.events.filter((event) => event.state === 'SUCCEEDED')).toHaveLength(1);
      expect(task?.updatedAt).toBe(first.updatedAt);
    });

    it('ignores stale and contradicting callbacks after success, answering 200', async () => {
      const created = await createTaskOk(gateway);
      await waitForState(gateway, created.id, 'SUCCEEDED');
      const task = await target(gateway, created);
      const before = await visible(gateway, task.globalId);
      expect(before.resultUrls[0]).toMatch(/\/results\/task_kling_/);
      for (const state of ['waiting', 'queuing', 'generating', 'fail', 'success']) {
        expect(
          await postCallback(gateway, `${task.id}/${task.secret}`, callbackBody(task.upstreamTaskId, state)),
        ).toBe(200);
      }
      expect(await visible(gateway, task.globalId)).toEqual(before);
    });

    it('moves forward through out-of-order callbacks and never back', async () => {
      const task = await runningTask();
      const path = `${task.id}/${task.secret}`;
      expect(await postCallback(gateway, path, callbackBody(task.upstreamTaskId, 'generating'))).toBe(200);
      expect((await visible(gateway, task.globalId)).state).toBe('GENERATING');
      const generating = await visible(gateway, task.globalId);
      expect(await postCallback(gateway, path, callbackBody(task.upstreamTaskId, 'queuing'))).toBe(200);
      expect(await postCallback(gateway, path, callbackBody(task.upstreamTaskId, 'waiting'))).toBe(200);
      expect(await visible(gateway, task.globalId)).toEqual(generating);
      // kie's other spelling of the id and of the message.
      const alternative = JSON.stringify({
        code: 200,
        message: 'done',
        data: { task_id: task.upstreamTaskId, state: 'success', resultJson: { resultUrls: [FORGED_VIDEO] } },
      });
      expect(await postCallback(gateway, path, alternative)).toBe(200);
      const done = await getTask(gateway, task.globalId);
      expect(done?.state).toBe('SUCCEEDED');
      expect(done?.videoUrl).toBe(FORGED_VIDEO);
      expect(done?.events.map((event) => [event.state, event.source])).toEqual([
        ['PENDING', 'MUTATION'],
        ['WAITING', 'MUTATION'],
        ['GENERATING', 'CALLBACK'],
        ['SUCCEEDED', 'CALLBACK'],
      ]);
      expect(await postCallback(gateway, path, callbackBody(task.upstreamTaskId, 'fail'))).toBe(200);
      expect((await getTask(gateway, task.globalId))?.state).toBe('SUCCEEDED');
    });

    it('takes a burst of callbacks for one task at once: all answered, history forward, each version once', async () => {
      const task = await runningTask();
      const path = `${task.id}/${task.secret}`;
      // Every callback reads the task as WAITING before any of them writes: most lose the race and must
      // decide again on the row the winner left.
      const states = ['queuing', 'generating', 'success', 'queuing', 'generating', 'success', 'waiting'];
      const statuses = await Promise.all(
        [...states, ...states].map((state) =>
          postCallback(gateway, path, callbackBody(task.upstreamTaskId, state)),
        ),
      );
      expect(statuses).toEqual(statuses.map(() => 200));
      const done = await getTask(gateway, task.globalId);
      expect(done?.state).toBe('SUCCEEDED');
      expect(done?.videoUrl).toBe(FORGED_VIDEO);
      const versions = done?.events.map((event) => event.version) ?? [];
      expect(versions).toEqual(versions.map((_, index) => index + 1));
      expect(done?.version).toBe(versions.length);
      const order = ['PENDING', 'WAITING', 'QUEUING', 'GENERATING', 'SUCCEEDED'];
      const ranks = done?.events.map((event) => order.indexOf(event.state)) ?? [];
      expect(ranks).toEqual([...new Set(ranks)].sort((a, b) => a - b));
      expect(done?.events.filter((event) => event.state === 'SUCCEEDED')).toHaveLength(1);
    });

    it('records a failure callback with kie’s message', async () => {
      const task = await runningTask();
      expect(
        await postCallback(gateway, `${task.id}/${task.secret}`, callbackBody(task.upstreamTaskId, 'fail')),
      ).toBe(200);
      const failed = await getTask(gateway, task.globalId);
      expect(failed?.state).toBe('FAILED');
      expect(failed?.failure?.code).toBe('GENERATION_FAILED');
      expect(failed?.failure?.message).toContain('forged failure');
      expect(failed?.events.at(-1)).toMatchObject({ state: 'FAILED', source: 'CALLBACK' });
      expect(failed?.completedAt).not.toBeNull();
    });

    it('refuses forged, misdirected and malformed callbacks, changing nothing', async () => {
      const a = await runningTask();
      const b = await runningTask();
      const beforeA = await visible(gateway, a.globalId);
      const beforeB = await visible(gateway, b.globalId);
      const success = callbackBody(a.upstreamTaskId, 'success');
      const big = JSON.stringify({
        data: { taskId: a.upstreamTaskId, state: 'success', pad: 'x'.repeat(70_000) },
      });
      const cases: Array<[string, string, BodyInit | (() => BodyInit), number]> = [
        ['a wrong secret', `${a.id}/${'A'.repeat(32)}`, success, 401],
        ["another task's secret", `${a.id}/${b.secret}`, success, 401],
        ['no secret', `${a.id}`, success, 404],
        ['an extra path segment', `${a.id}/${a.secret}/more`, success, 404],
        ['an unknown task', `${randomUUID()}/${a.secret}`, success, 404],
        ['a task id that is not one', `not-a-task/${a.secret}`, success, 404],
        ["another task's kie id", `${a.id}/${a.secret}`, callbackBody(b.upstreamTaskId, 'success'), 401],
        ['an unknown kie id', `${a.id}/${a.secret}`, callbackBody('task_kling_0_forged', 'success'), 401],
        ['malformed JSON', `${a.id}/${a.secret}`, '{"data": {"taskId":', 400],
        ['JSON that is no callback', `${a.id}/${a.secret}`, '[1,2,3]', 400],
        ['an unknown state', `${a.id}/${a.secret}`, callbackBody(a.upstreamTaskId, 'finished'), 400],
        ['no kie id', `${a.id}/${a.secret}`, JSON.stringify({ data: { state: 'success' } }), 400],
        ['a body over 64 KiB', `${a.id}/${a.secret}`, big, 413],
        [
          'a streamed body over 64 KiB',
          `${a.id}/${a.secret}`,
          () =>
            new ReadableStream<Uint8Array>({
              start(controller) {
                // No content-length: the cap must hold while reading.
                for (let i = 0; i < 10; i++)
                  controller.enqueue(new TextEncoder().encode(big.slice(i * 7000)));
                controller.close();
              },
            }),
          413,
        ],
      ];
      for (const [name, path, payload, status] of cases) {
        const sent = typeof payload === 'function' ? payload() : payload;
        expect({ name, status: await postCallback(gateway, path, sent) }).toEqual({ name, status });
        expect({ name, a: await visible(gateway, a.globalId) }).toEqual({ name, a: beforeA });
      }
      expect(await visible(gateway, b.globalId)).toEqual(beforeB);
      const get = await fetch(`${gateway.url}/callbacks/kie/${a.id}/${a.secret}`);
      expect(get.status).toBe(405);

      // The same callback with the right secret and id is taken: the refusals above were not for its content.
      expect(await postCallback(gateway, `${a.id}/${a.secret}`, success)).toBe(200);
      expect((await getTask(gateway, a.globalId))?.state).toBe('SUCCEEDED');
      expect(await visible(gateway, b.globalId)).toEqual(beforeB);
    });

    it('answers a callback sent from a browser page as it answers kie, with CORS headers for an allowed origin', async () => {
      const a = await runningTask();
      const origin = 'http://localhost:5173';
      const post = (path: string, body: string, headers: Record<string, string> = {}) =>
        fetch(`${gateway.url}/callbacks/kie/${path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...headers },
          body,
        });
      // kie's requests (no Origin) and a page's (Origin) are served by different paths: same answers.
      for (const [path, body] of [
        [`${a.id}/${'A'.repeat(32)}`, callbackBody(a.upstreamTaskId, 'success')],
        [`${a.id}/${a.secret}`, '{"data": {"taskId":'],
        [`${randomUUID()}/${a.secret}`, callbackBody(a.upstreamTaskId, 'success')],
      ] as const) {
        const fromKie = await post(path, body);
        const fromPage = await post(path, body, { origin });
        expect({ status: fromPage.status, body: await fromPage.json() }).toEqual({
          status: fromKie.status,
          body: await fromKie.json(),
        });
        expect(fromKie.headers.get('access-control-allow-origin')).toBeNull();
        expect(fromPage.headers.get('access-control-allow-origin')).toBe(origin);
      }
      const preflight = await fetch(`${gateway.url}/callbacks/kie/${a.id}/${a.secret}`, {
        method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'POST' },
      });
      expect(preflight.status).toBe(204);
      expect(preflight.headers.get('access-control-allow-origin')).toBe(origin);
    });
  });

  describe('signed kie callbacks (KIE_WEBHOOK_HMAC_KEY)', () => {
    let kie: SimulatorServer;
    let gateway: TestGateway;

    beforeAll(async () => {
      kie = await startSimulatorServer({ hmacKey: HMAC_KEY, knobs: { stepMs: 50 } });
      gateway = await startTestGateway({
        database,
        kieUrl: kie.url,
        env: { KIE_WEBHOOK_HMAC_KEY: HMAC_KEY },
      });
    });
    afterAll(async () => {
      await gateway?.stop();
      await kie?.close();
    });

    it("accepts kie's signed callback", async () => {
      const created = await createTaskOk(gateway);
      const task = await waitForState(gateway, created.id, 'SUCCEEDED');
      expect(task.events.at(-1)).toMatchObject({ state: 'SUCCEEDED', source: 'CALLBACK' });
    });

    it('refuses a missing, wrong or stale signature, changing nothing', async () => {
      kie.simulator.knobs.stepMs = 600_000;
      const created = await createTaskOk(gateway);
      const other = await target(gateway, await createTaskOk(gateway));
      kie.simulator.knobs.stepMs = 50;
      const task = await target(gateway, created);
      const path = `${task.id}/${task.secret}`;
      const success = callbackBody(task.upstreamTaskId, 'success');
      const before = await visible(gateway, task.globalId);
      const now = nowSeconds();
      const cases: Array<[string, Record<string, string>, string]> = [
        ['no signature', {}, path],
        ['a timestamp only', { 'x-webhook-timestamp': String(now) }, path],
        [
          'a signature only',
          { 'x-webhook-signature': sign(task.upstreamTaskId, now)['x-webhook-signature'] ?? '' },
          path,
        ],
        ['another key', sign(task.upstreamTaskId, now, 'not-the-key'), path],
        ["another task's kie id", sign(other.upstreamTaskId, now), path],
        // 20 s beyond the window, so whole-second timestamps and a slow machine cannot bring them inside it.
        ['a timestamp 320 s old', sign(task.upstreamTaskId, now - 320), path],
        ['a timestamp 320 s ahead', sign(task.upstreamTaskId, now + 320), path],
        ['a timestamp in milliseconds', sign(task.upstreamTaskId, Date.now()), path],
        [
          'a signature for a tampered timestamp',
          { ...sign(task.upstreamTaskId, now), 'x-webhook-timestamp': String(now - 1) },
          path,
        ],
        [
          'a valid signature but a wrong secret',
          sign(task.upstreamTaskId, now),
          `${task.id}/${other.secret}`,
        ],
      ];
      for (const [name, headers, url] of cases) {
        expect({ name, status: await postCallback(gateway, url, success, headers) }).toEqual({
          name,
          status: 401,
        });
        expect({ name, task: await visible(gateway, task.globalId) }).toEqual({ name, task: before });
      }

      // Inside the window, a few minutes of clock skew are accepted.
      expect(
        await postCallback(
          gateway,
          path,
          callbackBody(task.upstreamTaskId, 'generating'),
          sign(task.upstreamTaskId, now - 200),
        ),
      ).toBe(200);
      expect((await getTask(gateway, task.globalId))?.state).toBe('GENERATING');
      expect(await postCallback(gateway, path, success, sign(task.upstreamTaskId, nowSeconds()))).toBe(200);
      const done = await getTask(gateway, task.globalId);
      expect(done?.state).toBe('SUCCEEDED');
      expect(done?.videoUrl).toBe(FORGED_VIDEO);
    });
  });
});
