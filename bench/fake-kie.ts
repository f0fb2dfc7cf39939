import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { callbackBody, signatureHeaders } from './lib/callback.js';
import { httpRequest } from './lib/http.js';

/**
 * A bench-local kie: bare node:http, answers at once, so what the bench measures is the gateway. It runs in the
 * load generator's process. Each task may get a duration; recordInfo then answers by the clock, and the task's
 * callback is either sent when it finishes or dropped. Without a duration a task never finishes by itself.
 */

export interface FakeTask {
  taskId: string;
  /** Order of creation, 0-based. */
  index: number;
  callBackUrl: string | undefined;
  createdAt: number;
  /** Date.now() when kie finishes it; undefined: never. */
  finishAt: number | undefined;
  queries: number;
}

export interface FakeKieBehaviour {
  /** Milliseconds the task with this creation index runs; undefined: it never finishes. */
  durationMs?: (index: number) => number | undefined;
  callbacks: 'send' | 'drop';
  hmacKey?: string;
}

export class FakeKie {
  readonly tasks = new Map<string, FakeTask>();
  readonly stats = { creates: 0, queries: 0, callbacksSent: 0, callbacksFailed: 0, downloadUrls: 0 };
  private behaviour: FakeKieBehaviour = { callbacks: 'drop' };
  private readonly timers = new Set<NodeJS.Timeout>();

  private constructor(
    private readonly server: ReturnType<typeof createServer>,
    readonly url: string,
  ) {}

  static async start(): Promise<FakeKie> {
    let fake: FakeKie | undefined;
    const server = createServer((req, res) => void fake?.handle(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    fake = new FakeKie(server, `http://127.0.0.1:${port}`);
    return fake;
  }

  /** Forgets every task and takes new behaviour, for the next scenario. */
  reset(behaviour: FakeKieBehaviour): void {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.tasks.clear();
    Object.assign(this.stats, {
      creates: 0,
      queries: 0,
      callbacksSent: 0,
      callbacksFailed: 0,
      downloadUrls: 0,
    });
    this.behaviour = behaviour;
  }

  async close(): Promise<void> {
    this.reset({ callbacks: 'drop' });
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.url);
    if (req.method === 'POST' && url.pathname === '/api/v1/jobs/createTask') {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { callBackUrl?: string };
      this.create(body.callBackUrl, res);
      return;
    }
    if (req.method === 'GET' && url.pathname === '/api/v1/jobs/recordInfo') {
      this.stats.queries++;
      const task = this.tasks.get(url.searchParams.get('taskId') ?? '');
      if (!task) return reply(res, 404, { code: 404, msg: 'Task not found', data: null });
      task.queries++;
      return reply(res, 200, { code: 200, msg: 'success', data: this.record(task) });
    }
    if (req.method === 'GET' && url.pathname === '/api/v1/chat/credit') {
      return reply(res, 200, { code: 200, msg: 'success', data: 1_000_000 });
    }
    if (req.method === 'POST' && url.pathname === '/api/v1/common/download-url') {
      // As kie: a fresh link to a file it generated, valid 20 minutes (the gateway refreshes old results).
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { url?: string };
      this.stats.downloadUrls++;
      return reply(res, 200, {
        code: 200,
        msg: 'success',
        data: `${body.url}?expires=${Date.now() + 20 * 60_000}`,
      });
    }
    reply(res, 404, { code: 404, msg: 'Not found', data: null });
  }

  private create(callBackUrl: string | undefined, res: ServerResponse): void {
    const index = this.stats.creates++;
    const createdAt = Date.now();
    const taskId = `task_kling_${createdAt}_${randomBytes(5).toString('hex')}`;
    const duration = this.behaviour.durationMs?.(index);
    const task: FakeTask = {
      taskId,
      index,
      callBackUrl,
      createdAt,
      finishAt: duration === undefined ? undefined : createdAt + duration,
      queries: 0,
    };
    this.tasks.set(taskId, task);
    if (duration !== undefined && callBackUrl && this.behaviour.callbacks === 'send') {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        void this.sendCallback(task, callBackUrl);
      }, duration);
      this.timers.add(timer);
    }
    reply(res, 200, { code: 200, msg: 'success', data: { taskId } });
  }

  private record(task: FakeTask) {
    const now = Date.now();
    const done = task.finishAt !== undefined && now >= task.finishAt;
    const share = task.finishAt === undefined ? 1 : (now - task.createdAt) / (task.finishAt - task.createdAt);
    const state = done ? 'success' : share < 0.1 ? 'waiting' : share < 0.3 ? 'queuing' : 'generating';
    return {
      taskId: task.taskId,
      model: 'kling/ai-avatar-pro',
      state,
      param: '{}',
      resultJson: done ? JSON.stringify({ resultUrls: [resultUrlOf(task.taskId)] }) : '',
      createTime: task.createdAt,
      updateTime: now,
      ...(done ? { completeTime: task.finishAt, costTime: 8 } : {}),
    };
  }

  private async sendCallback(task: FakeTask, url: string): Promise<void> {
    this.stats.callbacksSent++;
    const headers = this.behaviour.hmacKey
      ? signatureHeaders(task.taskId, this.behaviour.hmacKey)
      : { 'content-type': 'application/json' };
    try {
      const answer = await httpRequest(
        'POST',
        url,
        callbackBody(task.taskId, 'success', resultUrlOf(task.taskId)),
        headers,
      );
      if (answer.status !== 200) this.stats.callbacksFailed++;
    } catch {
      this.stats.callbacksFailed++;
    }
  }
}

export const resultUrlOf = (taskId: string) => `https://files.example.com/results/${taskId}.mp4`;

function reply(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}
