import { createHmac } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  type SimulatorKnobs,
  type SimulatorServer,
  startSimulatorServer,
} from '../../src/upstream/simulator.js';

const apiKey = 'sim-test-key';
const hmacKey = 'sim-test-hmac';
const auth = { authorization: `Bearer ${apiKey}` };
const waitOptions = { timeout: 5000, interval: 10 };

const defaultKnobs: SimulatorKnobs = {
  stepMs: 30,
  outcome: 'success',
  callbackMode: 'normal',
  lateMs: 0,
  createErrors: [],
  createDelayMs: 0,
  queryErrors: [],
  credits: 1000,
  resultUrlTtlMs: Number.POSITIVE_INFINITY,
  downloadUrlTtlMs: 20 * 60_000,
  downloadUrlErrors: [],
  resultErrors: [],
  resultDelayMs: 0,
  checkInputUrls: false,
};

interface Envelope {
  code: number;
  msg: string;
  data: unknown;
}

interface TaskRecord {
  taskId: string;
  model: string;
  state: string;
  param: string;
  resultJson: string;
  failCode?: string;
  failMsg?: string;
  createTime: number;
  updateTime: number;
  completeTime?: number;
}

interface ReceivedCallback {
  headers: IncomingHttpHeaders;
  body: { code: number; msg: string; data: TaskRecord & { consumeCredits: number; costTime: number } };
}

interface Receiver {
  url: string;
  received: ReceivedCallback[];
  forTask(taskId: string): ReceivedCallback[];
  close(): Promise<void>;
}

async function startReceiver(): Promise<Receiver> {
  const received: ReceivedCallback[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      received.push({ headers: req.headers, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
      res.writeHead(200).end('ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/callback`,
    received,
    forTask: (taskId) => received.filter((callback) => callback.body.data.taskId === taskId),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

let sim: SimulatorServer;
let receiver: Receiver;

beforeAll(async () => {
  sim = await startSimulatorServer({ apiKey, hmacKey, knobs: { stepMs: 30 } });
  receiver = await startReceiver();
});

afterAll(async () => {
  await sim.close();
  await receiver.close();
});

beforeEach(() => {
  Object.assign(sim.simulator.knobs, defaultKnobs, {
    createErrors: [],
    queryErrors: [],
    resultErrors: [],
    downloadUrlErrors: [],
  });
});

function taskBody(overrides: { prompt?: string; callBackUrl?: string; model?: string } = {}) {
  return {
    model: overrides.model ?? 'kling/ai-avatar-pro',
    ...(overrides.callBackUrl ? { callBackUrl: overrides.callBackUrl } : {}),
    input: {
      image_url: 'https://example.com/face.png',
      audio_url: 'https://example.com/voice.mp3',
      prompt: overrides.prompt ?? '',
    },
  };
}

async function post(body: unknown, headers: Record<string, string> = auth) {
  const response = await fetch(`${sim.url}/api/v1/jobs/createTask`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as Envelope };
}

async function createTask(overrides: Parameters<typeof taskBody>[0] = {}): Promise<string> {
  const { status, body } = await post(taskBody(overrides));
  expect(status).toBe(200);
  expect(body.code).toBe(200);
  return (body.data as { taskId: string }).taskId;
}

async function recordInfo(taskId: string, headers: Record<string, string> = auth) {
  const response = await fetch(`${sim.url}/api/v1/jobs/recordInfo?taskId=${encodeURIComponent(taskId)}`, {
    headers,
  });
  return { status: response.status, body: (await response.json()) as Envelope };
}

async function waitForState(taskId: string, state: string): Promise<TaskRecord> {
  return vi.waitFor(async () => {
    const { body } = await recordInfo(taskId);
    const record = body.data as TaskRecord;
    expect(record.state).toBe(state);
    return record;
  }, waitOptions);
}

function expectedSignature(taskId: string, timestamp: string): string {
  return createHmac('sha256', hmacKey).update(`${taskId}.${timestamp}`).digest('base64');
}

describe('kie simulator over HTTP', () => {
  it('walks a task through the states to success and sends a signed callback', async () => {
    const taskId = await createTask({ callBackUrl: receiver.url });
    expect(taskId).toMatch(/^task_kling_\d+_[0-9a-f]+$/);

    const order = ['waiting', 'queuing', 'generating', 'success'];
    const seen: string[] = [];
    const final = await vi.waitFor(async () => {
      const { status, body } = await recordInfo(taskId);
      expect(status).toBe(200);
      const record = body.data as TaskRecord;
      if (seen.at(-1) !== record.state) seen.push(record.state);
      expect(record.state).toBe('success');
      return record;
    }, waitOptions);
    const positions = seen.map((state) => order.indexOf(state));
    expect(positions.every((position) => position >= 0)).toBe(true);
    expect(positions).toEqual([...positions].sort((a, b) => a - b));

    expect(final.taskId).toBe(taskId);
    expect(final.model).toBe('kling/ai-avatar-pro');
    expect(JSON.parse(final.param)).toEqual(taskBody({ callBackUrl: receiver.url }));
    expect(JSON.parse(final.resultJson)).toEqual({ resultUrls: [`${sim.url}/results/${taskId}.mp4`] });
    expect(final.completeTime).toBeGreaterThanOrEqual(final.createTime);
    expect(final.updateTime).toBe(final.completeTime);

    const [callback] = await vi.waitFor(() => {
      const callbacks = receiver.forTask(taskId);
      expect(callbacks).toHaveLength(1);
      return callbacks;
    }, waitOptions);
    expect(callback?.headers['content-type']).toContain('application/json');
    expect(callback?.body).toMatchObject({
      code: 200,
      msg: 'Playground task completed successfully.',
      data: {
        taskId,
        model: 'kling/ai-avatar-pro',
        state: 'success',
        resultJson: final.resultJson,
        createTime: final.createTime,
        completeTime: final.completeTime,
      },
    });
    expect(callback?.body.data.consumeCredits).toBeGreaterThan(0);
    const timestamp = callback?.headers['x-webhook-timestamp'];
    expect(typeof timestamp).toBe('string');
    expect(Math.abs(Number(timestamp) - Date.now() / 1000)).toBeLessThan(300);
    expect(callback?.headers['x-webhook-signature']).toBe(expectedSignature(taskId, String(timestamp)));
  });

  it('reports a fresh task as waiting with no result yet', async () => {
    sim.simulator.knobs.stepMs = 60_000;
    const taskId = await createTask();
    const { body } = await recordInfo(taskId);
    expect(body.data).toMatchObject({ taskId, state: 'waiting', resultJson: '' });
    expect(sim.simulator.taskState(taskId)).toBe('waiting');
  });

  it('fails tasks when the outcome knob says fail', async () => {
    sim.simulator.knobs.outcome = 'fail';
    const taskId = await createTask({ callBackUrl: receiver.url });
    const record = await waitForState(taskId, 'fail');
    expect(record).toMatchObject({
      failCode: '500',
      failMsg: 'Simulated generation failure',
      resultJson: '',
    });

    const callbacks = await vi.waitFor(() => {
      const found = receiver.forTask(taskId);
      expect(found).toHaveLength(1);
      return found;
    }, waitOptions);
    expect(callbacks[0]?.body).toMatchObject({
      code: 501,
      msg: 'Playground task failed.',
      data: { taskId, state: 'fail', failCode: '500', failMsg: 'Simulated generation failure' },
    });
  });

  it('fails a task whose prompt contains [fail] even when the outcome is success', async () => {
    const taskId = await createTask({ prompt: 'please [fail] this one' });
    const record = await waitForState(taskId, 'fail');
    expect(record.failCode).toBe('500');
  });

  it('answers createTask with queued error codes, as both HTTP status and envelope code, then creates', async () => {
    sim.simulator.knobs.createErrors = [402, 455];
    const before = { ...sim.simulator.stats };

    const first = await post(taskBody());
    expect(first.status).toBe(402);
    expect(first.body).toMatchObject({ code: 402, data: null });
    expect(first.body.msg).toBeTruthy();

    const second = await post(taskBody());
    expect(second.status).toBe(455);
    expect(second.body).toMatchObject({ code: 455, data: null });

    const third = await post(taskBody());
    expect(third.status).toBe(200);
    expect(third.body.code).toBe(200);

    expect(sim.simulator.stats.createRequests - before.createRequests).toBe(3);
    expect(sim.simulator.stats.creates - before.creates).toBe(1);
  });

  it('answers recordInfo with queued error codes, then the record', async () => {
    const taskId = await createTask();
    sim.simulator.knobs.queryErrors = [500];
    const before = sim.simulator.stats.queries;
    const first = await recordInfo(taskId);
    expect(first.status).toBe(500);
    expect(first.body).toMatchObject({ code: 500, data: null });
    const second = await recordInfo(taskId);
    expect(second.status).toBe(200);
    expect(second.body.data).toMatchObject({ taskId });
    expect(sim.simulator.stats.queries - before).toBe(2);
  });

  it('creates the task before a delayed answer, so a client that timed out still spent a task', async () => {
    sim.simulator.knobs.createDelayMs = 10_000;
    const before = sim.simulator.stats.creates;
    const request = fetch(`${sim.url}/api/v1/jobs/createTask`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...auth },
      body: JSON.stringify(taskBody()),
      signal: AbortSignal.timeout(200),
    });
    await expect(request).rejects.toThrow();
    expect(sim.simulator.stats.creates - before).toBe(1);
  });

  it('answers 404 for an unknown task id', async () => {
    const { status, body } = await recordInfo('task_kling_does_not_exist');
    expect(status).toBe(404);
    expect(body).toMatchObject({ code: 404, data: null });
  });

  it('answers 401 without a bearer or with the wrong key', async () => {
    const missing = await post(taskBody(), {});
    expect(missing.status).toBe(401);
    expect(missing.body).toMatchObject({ code: 401, data: null });

    const wrong = await recordInfo('anything', { authorization: 'Bearer not-the-key' });
    expect(wrong.status).toBe(401);
    expect(wrong.body.code).toBe(401);

    const credit = await fetch(`${sim.url}/api/v1/chat/credit`);
    expect(credit.status).toBe(401);
  });

  it('accepts any non-empty bearer when no api key is configured', async () => {
    const open = await startSimulatorServer({ knobs: { stepMs: 30 } });
    try {
      const response = await fetch(`${open.url}/api/v1/chat/credit`, {
        headers: { authorization: 'Bearer x' },
      });
      expect(await response.json()).toMatchObject({ code: 200, msg: 'success', data: expect.any(Number) });
      const missing = await fetch(`${open.url}/api/v1/chat/credit`);
      expect(missing.status).toBe(401);
    } finally {
      await open.close();
    }
  });

  it('reports credits', async () => {
    const response = await fetch(`${sim.url}/api/v1/chat/credit`, { headers: auth });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ code: 200, msg: 'success', data: 1000 });
  });

  it('charges each create its cost, refuses with 402 when the account runs dry, and takes a top-up', async () => {
    const balance = async () =>
      (await (await fetch(`${sim.url}/api/v1/chat/credit`, { headers: auth })).json()) as Envelope;
    sim.simulator.knobs.credits = 48;
    const paid = await createTask();
    expect((await balance()).data).toBe(16);
    const refused = await post(taskBody());
    expect(refused).toMatchObject({ status: 402, body: { code: 402, msg: 'Credits insufficient' } });
    // STANDARD costs half as much (8 credits a second for the 2 s sample) and still fits.
    const cheap = await createTask({ model: 'kling/ai-avatar-standard', prompt: '[fail]' });
    expect((await balance()).data).toBe(0);
    expect((await waitForState(paid, 'success')) as unknown).toMatchObject({ consumeCredits: 32 });
    // A failed render costs nothing: its credits come back.
    expect((await waitForState(cheap, 'fail')) as unknown).toMatchObject({ consumeCredits: 0 });
    expect((await balance()).data).toBe(16);

    const topUp = await fetch(`${sim.url}/admin/credits`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ credits: 500 }),
    });
    expect(await topUp.json()).toMatchObject({ code: 200, data: 500 });
    await createTask();
    expect((await balance()).data).toBe(468);
    const bad = await fetch(`${sim.url}/admin/credits`, {
      method: 'POST',
      headers: auth,
      body: '{"credits":-1}',
    });
    expect(bad.status).toBe(422);
  });

  it('sends the callback twice in duplicate mode', async () => {
    sim.simulator.knobs.callbackMode = 'duplicate';
    const taskId = await createTask({ callBackUrl: receiver.url });
    const callbacks = await vi.waitFor(() => {
      const found = receiver.forTask(taskId);
      expect(found).toHaveLength(2);
      return found;
    }, waitOptions);
    expect(callbacks[1]?.body).toEqual(callbacks[0]?.body);
  });

  it('sends no callback in drop mode', async () => {
    sim.simulator.knobs.callbackMode = 'drop';
    const dropped = await createTask({ callBackUrl: receiver.url });
    // Knobs apply to tasks created afterwards: this one ends after the dropped one and does call back.
    sim.simulator.knobs.callbackMode = 'normal';
    const witness = await createTask({ callBackUrl: receiver.url });

    await vi.waitFor(() => expect(receiver.forTask(witness)).toHaveLength(1), waitOptions);
    expect(sim.simulator.taskState(dropped)).toBe('success');
    expect(receiver.forTask(dropped)).toHaveLength(0);
  });

  it('sends the callback after the task has ended in late mode', async () => {
    sim.simulator.knobs.callbackMode = 'late';
    sim.simulator.knobs.lateMs = 400;
    const taskId = await createTask({ callBackUrl: receiver.url });
    await waitForState(taskId, 'success');
    expect(receiver.forTask(taskId)).toHaveLength(0);
    await vi.waitFor(() => expect(receiver.forTask(taskId)).toHaveLength(1), waitOptions);
  });

  it('serves the result video, with byte ranges', async () => {
    const sample = new Uint8Array(await readFile(new URL('../../assets/sample.mp4', import.meta.url)));
    const taskId = await createTask();
    const record = await waitForState(taskId, 'success');
    const [videoUrl] = (JSON.parse(record.resultJson) as { resultUrls: string[] }).resultUrls;
    expect(videoUrl).toBeDefined();

    const full = await fetch(videoUrl!);
    expect(full.status).toBe(200);
    expect(full.headers.get('content-type')).toBe('video/mp4');
    expect(full.headers.get('accept-ranges')).toBe('bytes');
    expect(new Uint8Array(await full.arrayBuffer())).toEqual(sample);

    const partial = await fetch(videoUrl!, { headers: { range: 'bytes=100-199' } });
    expect(partial.status).toBe(206);
    expect(partial.headers.get('content-range')).toBe(`bytes 100-199/${sample.byteLength}`);
    expect(new Uint8Array(await partial.arrayBuffer())).toEqual(sample.slice(100, 200));

    const open = await fetch(videoUrl!, { headers: { range: 'bytes=0-' } });
    expect(open.status).toBe(206);
    expect(new Uint8Array(await open.arrayBuffer())).toEqual(sample);

    const suffix = await fetch(videoUrl!, { headers: { range: 'bytes=-10' } });
    expect(suffix.status).toBe(206);
    expect(new Uint8Array(await suffix.arrayBuffer())).toEqual(sample.slice(-10));

    const beyond = await fetch(videoUrl!, { headers: { range: `bytes=${sample.byteLength}-` } });
    expect(beyond.status).toBe(416);
    expect(beyond.headers.get('content-range')).toBe(`bytes */${sample.byteLength}`);
    await beyond.arrayBuffer();

    const unknown = await fetch(`${sim.url}/results/nope.mp4`);
    expect(unknown.status).toBe(404);
    await unknown.arrayBuffer();
  });

  it("expires result URLs and hands out fresh links through download-url, like kie's", async () => {
    const taskId = await createTask();
    const record = await waitForState(taskId, 'success');
    const [videoUrl = ''] = (JSON.parse(record.resultJson) as { resultUrls: string[] }).resultUrls;
    sim.simulator.knobs.resultUrlTtlMs = 0;
    const expired = await fetch(videoUrl);
    expect(expired.status).toBe(403);
    await expired.arrayBuffer();

    const refresh = (url: string) =>
      fetch(`${sim.url}/api/v1/common/download-url`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ url }),
      }).then(async (response) => ({ status: response.status, body: (await response.json()) as Envelope }));
    const fresh = await refresh(videoUrl);
    expect(fresh.status).toBe(200);
    const link = String(fresh.body.data);
    const served = await fetch(link);
    expect(served.status).toBe(200);
    expect((await served.arrayBuffer()).byteLength).toBeGreaterThan(1000);
    expect(sim.simulator.stats.downloadUrls).toBe(1);

    // A link whose expiry was stretched, and a URL kie never made, are refused.
    const stretched = await fetch(link.replace(/expires=\d+/, `expires=${Date.now() + 3_600_000}`));
    expect(stretched.status).toBe(403);
    await stretched.arrayBuffer();
    expect((await refresh('https://elsewhere.example.com/results/x.mp4')).status).toBe(422);
    sim.simulator.knobs.downloadUrlTtlMs = 0;
    const short = await fetch(String((await refresh(videoUrl)).body.data));
    expect(short.status).toBe(403);
    await short.arrayBuffer();
  });

  it('answers result downloads with the injected errors first', async () => {
    const taskId = await createTask();
    await waitForState(taskId, 'success');
    sim.simulator.knobs.resultErrors = [500];
    const failing = await fetch(`${sim.url}/results/${taskId}.mp4`);
    expect(failing.status).toBe(500);
    await failing.arrayBuffer();
    const working = await fetch(`${sim.url}/results/${taskId}.mp4`);
    expect(working.status).toBe(200);
    await working.arrayBuffer();
  });

  it('does not serve a result before the task succeeded', async () => {
    sim.simulator.knobs.stepMs = 60_000;
    const taskId = await createTask();
    const response = await fetch(`${sim.url}/results/${taskId}.mp4`);
    expect(response.status).toBe(404);
    await response.arrayBuffer();
  });

  it('rejects malformed JSON and invalid input like kie', async () => {
    const malformed = await post('{"model":');
    expect(malformed.status).toBe(400);
    expect(malformed.body).toEqual({ code: 400, msg: 'invalid json', data: null });

    const invalid = [
      taskBody({ model: 'kling/other' }),
      { model: 'kling/ai-avatar-pro', input: { audio_url: 'https://example.com/a.mp3' } },
      { ...taskBody(), input: { ...taskBody().input, image_url: 'ftp://example.com/face.png' } },
      taskBody({ prompt: 'x'.repeat(5001) }),
      [],
    ];
    for (const body of invalid) {
      const answer = await post(body);
      expect(answer.status).toBe(422);
      expect(answer.body).toMatchObject({ code: 422, data: null });
      expect(answer.body.msg).toBeTruthy();
    }
    const standard = await post(taskBody({ model: 'kling/ai-avatar-standard', prompt: 'x'.repeat(5000) }));
    expect(standard.status).toBe(200);
  });

  it('answers 404 JSON for unknown routes', async () => {
    const response = await fetch(`${sim.url}/api/v1/nothing`, { headers: auth });
    expect(response.status).toBe(404);
    expect(await response.json()).toMatchObject({ code: 404, data: null });
  });
});
