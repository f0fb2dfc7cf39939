import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createMetrics } from '../../src/metrics.js';
import { KieError } from '../../src/upstream/errors.js';
import { type CreateTaskRequest, KieClient } from '../../src/upstream/kie-client.js';
import { SlidingWindowLimiter } from '../../src/upstream/rate-limiter.js';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';

const API_KEY = 'kie-client-test-key-do-not-log';

const request: CreateTaskRequest = {
  model: 'kling/ai-avatar-pro',
  callBackUrl: 'http://127.0.0.1:9/callbacks/kie/x/y',
  input: {
    image_url: 'https://example.com/face.png',
    audio_url: 'https://example.com/voice.mp3',
    prompt: '',
  },
};

interface Client {
  kie: KieClient;
  logs: string[];
  metrics: ReturnType<typeof createMetrics>;
}

function client(apiUrl: string, options: { timeoutMs?: number; apiKey?: string } = {}): Client {
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      logs.push(String(chunk));
      done();
    },
  });
  const metrics = createMetrics();
  const kie = new KieClient({
    apiUrl,
    apiKey: options.apiKey ?? API_KEY,
    timeoutMs: options.timeoutMs ?? 2_000,
    queryLimiter: new SlidingWindowLimiter(1_000, 1_000),
    logger: pino({ level: 'info' }, sink),
    metrics,
  });
  return { kie, logs, metrics };
}

/** The KieError a promise rejects with; fails the test when it resolves or rejects with something else. */
async function kieError(promise: Promise<unknown>): Promise<KieError> {
  const error = await promise.then(
    (value) => {
      throw new Error(`expected a KieError, got ${JSON.stringify(value)}`);
    },
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(KieError);
  return error as KieError;
}

describe('KieClient against the simulator over HTTP', () => {
  let kie: SimulatorServer;
  let subject: Client;

  beforeAll(async () => {
    kie = await startSimulatorServer({ apiKey: API_KEY, knobs: { stepMs: 60_000 } });
  });
  afterAll(async () => {
    await kie?.close();
  });
  beforeEach(() => {
    kie.simulator.knobs.createErrors = [];
    kie.simulator.knobs.queryErrors = [];
    subject = client(kie.url);
  });

  it('creates a task and reads it back', async () => {
    const { taskId } = await subject.kie.createTask(request);
    expect(taskId).toMatch(/^task_kling_/);
    const snapshot = await subject.kie.recordInfo(taskId);
    expect(snapshot).toMatchObject({ upstreamTaskId: taskId, state: 'waiting', resultUrls: [] });
  });

  it.each([
    [402, 'insufficient_credits'],
    [401, 'rejected'],
    [422, 'rejected'],
    [433, 'rejected'],
    [505, 'rejected'],
    [429, 'retryable'],
    [455, 'retryable'],
    [500, 'retryable'],
  ] as const)('maps create answer %i to %s, without retrying it', async (code, kind) => {
    const before = kie.simulator.stats.createRequests;
    kie.simulator.knobs.createErrors = [code];
    const error = await kieError(subject.kie.createTask(request));
    expect(error.kind).toBe(kind);
    expect(error.code).toBe(code);
    expect(error.message).toContain(String(code));
    // A paid create is sent once; the caller decides about retries.
    expect(kie.simulator.stats.createRequests - before).toBe(1);
  });

  it('is refused with a wrong API key', async () => {
    const wrong = client(kie.url, { apiKey: 'another-key' });
    const error = await kieError(wrong.kie.createTask(request));
    expect(error).toMatchObject({ kind: 'rejected', code: 401 });
  });

  it('retries a query after a retryable answer, with backoff', async () => {
    const { taskId } = await subject.kie.createTask(request);
    const before = kie.simulator.stats.queries;
    kie.simulator.knobs.queryErrors = [500, 429];
    const snapshot = await subject.kie.recordInfo(taskId);
    expect(snapshot.upstreamTaskId).toBe(taskId);
    expect(kie.simulator.stats.queries - before).toBe(3);
  });

  it('gives up on a query after three attempts', async () => {
    const before = kie.simulator.stats.queries;
    kie.simulator.knobs.queryErrors = [500, 500, 500, 500];
    const error = await kieError(subject.kie.recordInfo('task_kling_whatever'));
    expect(error).toMatchObject({ kind: 'retryable', code: 500 });
    expect(kie.simulator.stats.queries - before).toBe(3);
  });

  it('does not retry a query kie refuses (unknown task)', async () => {
    const before = kie.simulator.stats.queries;
    const error = await kieError(subject.kie.recordInfo('task_kling_unknown'));
    expect(error).toMatchObject({ kind: 'rejected', code: 404 });
    expect(kie.simulator.stats.queries - before).toBe(1);
  });

  it('logs each call with its code and duration, never the API key, and counts it', async () => {
    kie.simulator.knobs.createErrors = [402];
    await subject.kie.createTask(request).catch(() => {});
    await subject.kie.createTask(request);
    const lines = subject.logs.map((line) => JSON.parse(line) as { upstream?: Record<string, unknown> });
    expect(lines.map((line) => line.upstream)).toEqual([
      expect.objectContaining({ operation: 'createTask', method: 'POST', code: 402, ms: expect.any(Number) }),
      expect.objectContaining({ operation: 'createTask', method: 'POST', code: 200, ms: expect.any(Number) }),
    ]);
    expect(subject.logs.join('')).not.toContain(API_KEY);
    const metrics = await subject.metrics.registry.metrics();
    expect(metrics).toContain('avatar_gateway_upstream_calls_total{operation="createTask",code="402"} 1');
    expect(metrics).toContain('avatar_gateway_upstream_calls_total{operation="createTask",code="200"} 1');
  });
});

type Handler = (request: IncomingMessage, response: ServerResponse) => void;

describe('KieClient against odd answers', () => {
  let handler: Handler;
  let server: ReturnType<typeof createServer>;
  let url: string;
  let requests: number;

  beforeAll(async () => {
    server = createServer((req, res) => {
      requests++;
      req.resume();
      req.on('end', () => handler(req, res));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  });
  beforeEach(() => {
    requests = 0;
  });
  afterEach(() => {
    server.closeAllConnections();
  });

  const answer =
    (status: number, body: string): Handler =>
    (_req, res) =>
      res.writeHead(status, { 'content-type': 'application/json' }).end(body);

  it('treats a 200 whose body is not JSON as an unknown outcome (the task may exist)', async () => {
    handler = answer(200, '<html>gateway hiccup</html>');
    const error = await kieError(client(url).kie.createTask(request));
    expect(error.kind).toBe('unknown_outcome');
  });

  it('treats a 200 without a taskId as an unknown outcome', async () => {
    handler = answer(200, JSON.stringify({ code: 200, msg: 'success', data: {} }));
    const error = await kieError(client(url).kie.createTask(request));
    expect(error.kind).toBe('unknown_outcome');
  });

  it("reads an HTTP 500 with kie's envelope as retryable, with kie's message", async () => {
    handler = answer(500, JSON.stringify({ code: 500, msg: 'Server error, try later', data: null }));
    const error = await kieError(client(url).kie.createTask(request));
    expect(error).toMatchObject({ kind: 'retryable', code: 500 });
    expect(error.message).toContain('Server error, try later');
  });

  it('reads an error in the envelope of an HTTP 200 like one in the status', async () => {
    handler = answer(200, JSON.stringify({ code: 402, msg: 'Credits insufficient', data: null }));
    const error = await kieError(client(url).kie.createTask(request));
    expect(error).toMatchObject({ kind: 'insufficient_credits', code: 402 });
  });

  it('reads `message` when kie sends it instead of `msg`', async () => {
    handler = answer(422, JSON.stringify({ code: 422, message: 'image_url is required', data: null }));
    const error = await kieError(client(url).kie.createTask(request));
    expect(error).toMatchObject({ kind: 'rejected', code: 422 });
    expect(error.message).toContain('image_url is required');
  });

  it('reads an HTTP error without a JSON body by its status', async () => {
    handler = answer(503, 'Service Unavailable');
    const error = await kieError(client(url).kie.createTask(request));
    expect(error).toMatchObject({ kind: 'retryable', code: 503 });
  });

  it('reads a successful query whose envelope uses `message`', async () => {
    handler = answer(
      200,
      JSON.stringify({
        code: 200,
        message: 'success',
        data: { task_id: 'task_x', state: 'success', resultJson: '{"resultUrls":["https://cdn/x.mp4"]}' },
      }),
    );
    const snapshot = await client(url).kie.recordInfo('task_x');
    expect(snapshot).toEqual(
      expect.objectContaining({
        upstreamTaskId: 'task_x',
        state: 'success',
        resultUrls: ['https://cdn/x.mp4'],
      }),
    );
  });

  it('calls a timeout an unknown outcome: the request may have reached kie', async () => {
    handler = () => {
      // Never answers.
    };
    const error = await kieError(client(url, { timeoutMs: 150 }).kie.createTask(request));
    expect(error).toMatchObject({ kind: 'unknown_outcome', code: 0 });
    expect(requests).toBe(1);
  });

  it('calls a refused connection retryable: nothing reached kie', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const error = await kieError(client(`http://127.0.0.1:${port}`).kie.createTask(request));
    expect(error).toMatchObject({ kind: 'retryable', code: 0 });
    expect(error.message).toContain('ECONNREFUSED');
  });
});
