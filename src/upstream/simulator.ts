import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createServerAdapter } from '@whatwg-node/server';
import { z } from 'zod';
import { creditsPerSecond } from './pricing.js';

export type SimulatedOutcome = 'success' | 'fail';
export type CallbackMode = 'normal' | 'drop' | 'duplicate' | 'late';

/** Mutable at runtime (tests flip them); each task snapshots them when it is created. */
export interface SimulatorKnobs {
  /** Time each task spends in waiting, queuing and generating before its terminal state. */
  stepMs: number;
  outcome: SimulatedOutcome;
  /** duplicate: the callback is sent twice; late: it is sent `lateMs` after the task ended. */
  callbackMode: CallbackMode;
  lateMs: number;
  /** Each createTask takes the first code and answers with it instead of creating a task. */
  createErrors: number[];
  /** The task is created, then the answer waits this long: a submit that times out but did happen. */
  createDelayMs: number;
  /** Each recordInfo takes the first code and answers with it. */
  queryErrors: number[];
  /**
   * The account's balance. A create is refused with 402 when the balance is below what the task costs; else its
   * cost is taken at once (and given back if the task fails, which costs nothing). Set it to run out or top up.
   */
  credits: number;
  /**
   * How long after a task ended its result URL (the one in resultJson) keeps working; past it the URL
   * answers 403, as kie's do after about 24 hours. Links from download-url work for `downloadUrlTtlMs`.
   */
  resultUrlTtlMs: number;
  downloadUrlTtlMs: number;
  /** Each download-url call takes the first code and answers with it (kie having trouble). */
  downloadUrlErrors: number[];
  /** Each download of a result video takes the first code and answers with it (a CDN having trouble). */
  resultErrors: number[];
  /** A download of a result video waits this long before it is answered. */
  resultDelayMs: number;
  /**
   * Like kie, a task downloads its image and audio: one that cannot be fetched (a 404, no such host, no answer
   * within 5 s) ends `fail`. Off unless set, so placeholder URLs that exist nowhere can stand in a test.
   */
  checkInputUrls: boolean;
}

export interface SimulatorStats {
  /** Files taken by the upload endpoints. */
  uploads: number;
  creates: number;
  createRequests: number;
  queries: number;
  callbacksSent: number;
  /** Balance reads (`/api/v1/chat/credit`). */
  creditChecks: number;
  /** download-url calls received, and those answered with a fresh link. */
  downloadUrlRequests: number;
  downloadUrls: number;
  /** GETs of a result video received, and those answered 200 or 206. */
  resultRequests: number;
  resultDownloads: number;
}

export interface KieSimulatorOptions {
  knobs?: Partial<SimulatorKnobs>;
  /** Absolute URL where the simulator itself is reachable; result videos are `${resultBaseUrl}/results/<taskId>.mp4`. */
  resultBaseUrl: string;
  /** When set, callbacks are signed like kie's webhook HMAC. */
  hmacKey?: string;
  /** When set, only this bearer is accepted; otherwise any non-empty one is. */
  apiKey?: string;
  fetchImpl?: typeof fetch;
}

export type SimulatedState = 'waiting' | 'queuing' | 'generating' | 'success' | 'fail';

export interface KieSimulator {
  /** `pathname` is relative to the simulator root: whoever mounts it under a prefix strips the prefix. */
  handle(request: Request, pathname: string): Promise<Response>;
  readonly knobs: SimulatorKnobs;
  readonly stats: SimulatorStats;
  taskState(taskId: string): SimulatedState | undefined;
  /** Every task created, in arrival order: what kie's own create limit would count. */
  createdTasks(): SimulatedCreate[];
  /** Every file uploaded, in arrival order. */
  uploadedFiles(): SimulatedUpload[];
  /** Stops all timers; pending callbacks are not sent and delayed answers are released. */
  close(): void;
}

export interface SimulatedCreate {
  taskId: string;
  /** When the create arrived (Unix ms). */
  at: number;
  callBackUrl: string | undefined;
}

export interface SimulatedUpload {
  /** Where the simulator serves it. */
  url: string;
  fileName: string;
  mimeType: string;
  bytes: Uint8Array<ArrayBuffer>;
}

export interface SimulatorServer {
  /** No trailing slash. */
  url: string;
  simulator: KieSimulator;
  close(): Promise<void>;
}

const models = ['kling/ai-avatar-pro', 'kling/ai-avatar-standard'] as const;
type Model = (typeof models)[number];

// The sample video is 2 s long; it is charged as kie would charge it.
const sampleSeconds = 2;
/** Enough for a long benchmark; tests that need the account to run dry set `credits`. */
const DEFAULT_CREDITS = 100_000_000;
const costOf = (model: Model) => creditsPerSecond[model] * sampleSeconds;
const duplicateGapMs = 20;
// kie's documented lifetime of a link from download-url.
const defaultDownloadUrlTtlMs = 20 * 60_000;
// kie's own callback timeout elsewhere; a receiver that hangs must not pin a socket forever.
const callbackTimeoutMs = 15_000;
// How long a task's download of one of its inputs may take.
const inputFetchTimeoutMs = 5_000;
// What the simulator keeps of uploaded files; the oldest go first (kie deletes them after 3 days).
const maxStoredUploadBytes = 256 * 1024 * 1024;
const maxUploadBytes = 100 * 1024 * 1024;

const errorMessages: Record<number, string> = {
  400: 'invalid json',
  401: 'You do not have access permissions',
  402: 'Credits insufficient',
  404: 'Task not found',
  422: 'Validation error',
  429: 'Rate limited, please try again later',
  433: 'Sub-key usage limit exceeded',
  455: 'Service unavailable (maintenance)',
  500: 'Server error, please try again later',
  501: 'Generation failed',
  505: 'Feature disabled',
};

function isHttpUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return url.protocol === 'http:' || url.protocol === 'https:';
  } catch {
    return false;
  }
}

const httpUrl = z.string().refine(isHttpUrl, { message: 'must be an http(s) URL' });

const createTaskBody = z.object({
  model: z.enum(models),
  callBackUrl: httpUrl.optional(),
  input: z.object({
    image_url: httpUrl,
    audio_url: httpUrl,
    prompt: z.string().max(5000).optional(),
  }),
});

interface SimTask {
  taskId: string;
  model: Model;
  param: string;
  callBackUrl: string | undefined;
  createTime: number;
  stepMs: number;
  outcome: SimulatedOutcome;
  failMsg: string;
  /** Settles once the task has fetched its inputs: undefined when they exist, else why not. */
  inputCheck: Promise<string | undefined>;
  inputsChecked: boolean;
  // Set when the terminal timer fires, so a receiver that queries right after a callback never sees an
  // earlier state because of clock rounding between setTimeout and Date.now().
  ended: boolean;
}

const assets = new URL('../../assets/', import.meta.url);
const assetCache = new Map<string, Promise<Uint8Array<ArrayBuffer>>>();

function loadAsset(name: string): Promise<Uint8Array<ArrayBuffer>> {
  let loaded = assetCache.get(name);
  if (!loaded) {
    // A copy typed as ArrayBuffer-backed: BodyInit refuses Buffer, whose backing store may be a SharedArrayBuffer.
    loaded = readFile(new URL(name, assets)).then((buffer) => new Uint8Array(buffer));
    assetCache.set(name, loaded);
  }
  return loaded;
}

const loadSample = () => loadAsset('sample.mp4');

/** Inputs to try the gateway with, served at `/samples/<name>`: a face and a 3-second recording. */
const samples: Record<string, { asset: string; type: string }> = {
  'face.png': { asset: 'face.png', type: 'image/png' },
  'voice.wav': { asset: 'voice-3s.wav', type: 'audio/wav' },
};

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
}

/** kie's envelope; errors also carry their code as the HTTP status when it is one, since sources disagree. */
function envelope(code: number, msg: string, data: unknown = null): Response {
  return json({ code, msg, data }, code >= 400 && code <= 599 ? code : 200);
}

function errorEnvelope(code: number, msg?: string): Response {
  return envelope(code, msg ?? errorMessages[code] ?? `Error ${code}`);
}

/** The task id in a result video's path (`/results/<taskId>.mp4`, relative to the simulator's root). */
function resultTaskId(pathname: string): string | undefined {
  return /^\/results\/([^/]+)\.mp4$/.exec(pathname)?.[1];
}

type ByteRange = { start: number; end: number } | 'unsatisfiable' | undefined;

/** A single `bytes=` range; anything else is ignored and the whole file is served, as RFC 9110 allows. */
function parseRange(header: string | null, size: number): ByteRange {
  if (!header) return undefined;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match) return undefined;
  const [, first = '', last = ''] = match;
  if (first === '' && last === '') return undefined;
  if (first === '') {
    const suffix = Number(last);
    if (suffix === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(first);
  const end = last === '' ? size - 1 : Math.min(Number(last), size - 1);
  if (last !== '' && Number(last) < start) return undefined;
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}

export function createKieSimulator(options: KieSimulatorOptions): KieSimulator {
  const knobs: SimulatorKnobs = {
    stepMs: options.knobs?.stepMs ?? 3000,
    outcome: options.knobs?.outcome ?? 'success',
    callbackMode: options.knobs?.callbackMode ?? 'normal',
    lateMs: options.knobs?.lateMs ?? 0,
    createErrors: [...(options.knobs?.createErrors ?? [])],
    createDelayMs: options.knobs?.createDelayMs ?? 0,
    queryErrors: [...(options.knobs?.queryErrors ?? [])],
    credits: options.knobs?.credits ?? DEFAULT_CREDITS,
    resultUrlTtlMs: options.knobs?.resultUrlTtlMs ?? Number.POSITIVE_INFINITY,
    downloadUrlTtlMs: options.knobs?.downloadUrlTtlMs ?? defaultDownloadUrlTtlMs,
    downloadUrlErrors: [...(options.knobs?.downloadUrlErrors ?? [])],
    resultErrors: [...(options.knobs?.resultErrors ?? [])],
    resultDelayMs: options.knobs?.resultDelayMs ?? 0,
    checkInputUrls: options.knobs?.checkInputUrls ?? false,
  };
  const stats: SimulatorStats = {
    uploads: 0,
    creates: 0,
    createRequests: 0,
    queries: 0,
    callbacksSent: 0,
    creditChecks: 0,
    downloadUrlRequests: 0,
    downloadUrls: 0,
    resultRequests: 0,
    resultDownloads: 0,
  };
  // Signs the links download-url hands out, so a link cannot be made up or stretched.
  const linkKey = randomBytes(32);
  const uploads = new Map<string, SimulatedUpload>();
  let storedUploadBytes = 0;
  const tasks = new Map<string, SimTask>();
  const timers = new Set<NodeJS.Timeout>();
  const releases = new Set<() => void>();
  const closing = new AbortController();
  const fetchImpl = options.fetchImpl ?? fetch;
  const resultBaseUrl = options.resultBaseUrl.replace(/\/+$/, '');
  const startedAt = Date.now();
  let closed = false;

  function later(ms: number, fn: () => void): void {
    if (closed) return;
    const timer = setTimeout(() => {
      timers.delete(timer);
      fn();
    }, ms);
    timer.unref();
    timers.add(timer);
  }

  /** Resolves after `ms`, or earlier when the client went away or the simulator closes. */
  function pause(ms: number, signal: AbortSignal): Promise<void> {
    if (ms <= 0 || closed || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(release, ms);
      timer.unref();
      function release(): void {
        clearTimeout(timer);
        signal.removeEventListener('abort', release);
        releases.delete(release);
        resolve();
      }
      signal.addEventListener('abort', release, { once: true });
      releases.add(release);
    });
  }

  function stateOf(task: SimTask, now = Date.now()): SimulatedState {
    if (task.ended) return task.outcome;
    // A task still fetching its inputs stays generating past its time, until the fetch settles.
    if (now - task.createTime >= 3 * task.stepMs) return task.inputsChecked ? task.outcome : 'generating';
    const step = Math.floor((now - task.createTime) / task.stepMs);
    return step <= 0 ? 'waiting' : step === 1 ? 'queuing' : 'generating';
  }

  function resultUrl(taskId: string): string {
    return `${resultBaseUrl}/results/${taskId}.mp4`;
  }

  /** The fields recordInfo and the callback share once a task has ended. */
  function terminalFields(task: SimTask): Record<string, unknown> {
    const completeTime = task.createTime + 3 * task.stepMs;
    const costTime = Math.max(1, Math.round((3 * task.stepMs) / 1000));
    if (task.outcome === 'success') {
      return {
        resultJson: JSON.stringify({ resultUrls: [resultUrl(task.taskId)] }),
        consumeCredits: costOf(task.model),
        costTime,
        completeTime,
      };
    }
    return {
      resultJson: '',
      failCode: '500',
      failMsg: task.failMsg,
      consumeCredits: 0,
      costTime,
      completeTime,
    };
  }

  function record(task: SimTask): Record<string, unknown> {
    const now = Date.now();
    const state = stateOf(task, now);
    const terminal = state === 'success' || state === 'fail';
    const steps = terminal ? 3 : Math.min(2, Math.floor((now - task.createTime) / task.stepMs));
    return {
      taskId: task.taskId,
      model: task.model,
      state,
      param: task.param,
      resultJson: '',
      costTime: 0,
      createTime: task.createTime,
      updateTime: task.createTime + steps * task.stepMs,
      ...(terminal ? terminalFields(task) : {}),
    };
  }

  async function sendCallback(task: SimTask, url: string): Promise<void> {
    const success = task.outcome === 'success';
    const body = JSON.stringify({
      code: success ? 200 : 501,
      msg: success ? 'Playground task completed successfully.' : 'Playground task failed.',
      data: {
        taskId: task.taskId,
        model: task.model,
        state: task.outcome,
        ...terminalFields(task),
        createTime: task.createTime,
      },
    });
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (options.hmacKey !== undefined) {
      const timestamp = String(Math.floor(Date.now() / 1000));
      headers['X-Webhook-Timestamp'] = timestamp;
      headers['X-Webhook-Signature'] = createHmac('sha256', options.hmacKey)
        .update(`${task.taskId}.${timestamp}`)
        .digest('base64');
    }
    stats.callbacksSent++;
    try {
      const response = await fetchImpl(url, {
        method: 'POST',
        headers,
        body,
        signal: AbortSignal.any([closing.signal, AbortSignal.timeout(callbackTimeoutMs)]),
      });
      // Drain so the keep-alive socket goes back to the pool.
      await response.arrayBuffer();
    } catch {
      // kie does not retry a failed callback; the gateway's poller is the fallback.
    }
  }

  function scheduleEnd(task: SimTask, mode: CallbackMode, lateMs: number): void {
    const endMs = 3 * task.stepMs;
    const url = task.callBackUrl;
    const send = () => {
      if (url !== undefined) void sendCallback(task, url);
    };
    later(endMs, () => {
      // The end waits for the inputs' download, which may outlast a short step.
      void task.inputCheck.then(() => {
        if (closed) return;
        task.ended = true;
        // A failed render costs nothing (consumeCredits 0): what was taken at the create is given back.
        if (task.outcome === 'fail') knobs.credits += costOf(task.model);
        if (mode === 'drop') return;
        if (mode === 'late') return later(Math.max(0, lateMs), send);
        send();
        if (mode === 'duplicate') later(duplicateGapMs, send);
      });
    });
  }

  /** Why kie could not download `url`, or undefined if it could. Uploaded files are looked up directly. */
  async function unreachable(url: string): Promise<string | undefined> {
    const own = ownUploadPath(url);
    if (own !== undefined) return uploads.has(own) ? undefined : `${url}: file not found`;
    try {
      const response = await fetchImpl(url, {
        headers: { range: 'bytes=0-0' },
        signal: AbortSignal.any([closing.signal, AbortSignal.timeout(inputFetchTimeoutMs)]),
      });
      await response.body?.cancel().catch(() => {});
      return response.ok ? undefined : `${url}: HTTP ${response.status}`;
    } catch (error) {
      return `${url}: ${(error as Error).message}`;
    }
  }

  async function checkInputs(task: SimTask, urls: { image_url: string; audio_url: string }) {
    const [image, audio] = await Promise.all([unreachable(urls.image_url), unreachable(urls.audio_url)]);
    const reason = image
      ? `image_url could not be downloaded (${image})`
      : audio
        ? `audio_url could not be downloaded (${audio})`
        : undefined;
    if (reason) {
      task.outcome = 'fail';
      task.failMsg = reason;
    }
    task.inputsChecked = true;
    return reason;
  }

  function ownUploadPath(url: string): string | undefined {
    const prefix = `${resultBaseUrl}/files/`;
    return url.startsWith(prefix) ? url.slice(prefix.length) : undefined;
  }

  /** kie's file-stream-upload: multipart `file`, `uploadPath`, optional `fileName`. */
  async function fileStreamUpload(request: Request): Promise<Response> {
    if (!authorized(request)) return errorEnvelope(401);
    const declared = Number(request.headers.get('content-length') ?? 0);
    if (declared > maxUploadBytes) return errorEnvelope(413, 'File too large');
    let form: FormData;
    try {
      form = await request.formData();
    } catch {
      return errorEnvelope(400, 'invalid multipart body');
    }
    const file = form.get('file');
    const uploadPath = form.get('uploadPath');
    if (typeof file === 'string' || file === null) return errorEnvelope(422, 'file is required');
    if (typeof uploadPath !== 'string' || !/^[\w./-]+$/.test(uploadPath) || uploadPath.includes('..')) {
      return errorEnvelope(422, 'uploadPath is required');
    }
    const named = form.get('fileName');
    const fileName = typeof named === 'string' && named !== '' ? named : `${randomBytes(8).toString('hex')}`;
    if (!/^[\w.-]+$/.test(fileName)) return errorEnvelope(422, 'fileName is invalid');
    const bytes = new Uint8Array(await file.arrayBuffer());
    if (bytes.byteLength > maxUploadBytes) return errorEnvelope(413, 'File too large');
    return storeUpload(`${uploadPath.replace(/^\/+|\/+$/g, '')}/${fileName}`, fileName, file.type, bytes);
  }

  function storeUpload(
    path: string,
    fileName: string,
    mimeType: string,
    bytes: Uint8Array<ArrayBuffer>,
  ): Response {
    const previous = uploads.get(path);
    // Reusing a name overwrites, as on kie.
    if (previous) storedUploadBytes -= previous.bytes.byteLength;
    uploads.delete(path);
    const url = `${resultBaseUrl}/files/${path}`;
    const upload: SimulatedUpload = {
      url,
      fileName,
      mimeType: mimeType || 'application/octet-stream',
      bytes,
    };
    uploads.set(path, upload);
    storedUploadBytes += bytes.byteLength;
    for (const [oldest, stored] of uploads) {
      if (storedUploadBytes <= maxStoredUploadBytes) break;
      uploads.delete(oldest);
      storedUploadBytes -= stored.bytes.byteLength;
    }
    stats.uploads++;
    return envelope(200, 'File uploaded successfully', {
      fileName,
      filePath: path,
      downloadUrl: url,
      fileSize: bytes.byteLength,
      mimeType: upload.mimeType,
      uploadedAt: new Date().toISOString(),
    });
  }

  function authorized(request: Request): boolean {
    const match = /^Bearer\s+(\S.*)$/i.exec(request.headers.get('authorization') ?? '');
    const token = match?.[1]?.trim();
    if (!token) return false;
    return options.apiKey === undefined || token === options.apiKey;
  }

  async function createTask(request: Request): Promise<Response> {
    stats.createRequests++;
    if (!authorized(request)) return errorEnvelope(401);
    const injected = knobs.createErrors.shift();
    if (injected !== undefined) return errorEnvelope(injected);

    let raw: unknown;
    try {
      raw = JSON.parse(await request.text());
    } catch {
      return errorEnvelope(400, 'invalid json');
    }
    const parsed = createTaskBody.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const where = issue?.path.join('.') || 'body';
      return errorEnvelope(422, `${where}: ${issue?.message ?? 'invalid'}`);
    }
    const body = parsed.data;
    if (knobs.credits < costOf(body.model)) return errorEnvelope(402);
    knobs.credits -= costOf(body.model);

    const createTime = Date.now();
    const taskId = `task_kling_${createTime}_${randomBytes(5).toString('hex')}`;
    const task: SimTask = {
      taskId,
      model: body.model,
      param: JSON.stringify(raw),
      callBackUrl: body.callBackUrl,
      createTime,
      stepMs: Math.max(1, knobs.stepMs),
      outcome: body.input.prompt?.includes('[fail]') ? 'fail' : knobs.outcome,
      failMsg: 'Simulated generation failure',
      inputCheck: Promise.resolve(undefined),
      inputsChecked: !knobs.checkInputUrls,
      ended: false,
    };
    if (knobs.checkInputUrls) task.inputCheck = checkInputs(task, body.input);
    tasks.set(taskId, task);
    stats.creates++;
    scheduleEnd(task, knobs.callbackMode, knobs.lateMs);

    await pause(knobs.createDelayMs, request.signal);
    return envelope(200, 'success', { taskId });
  }

  /** Not kie's: sets the account's balance (`{"credits": n}`), so an account can run dry and be topped up. */
  async function setCredits(request: Request): Promise<Response> {
    if (!authorized(request)) return errorEnvelope(401);
    const parsed = z
      .object({ credits: z.number().nonnegative().finite() })
      .safeParse(await request.json().catch(() => null));
    if (!parsed.success) return errorEnvelope(422, 'body must be {"credits": <a number of at least 0>}');
    knobs.credits = parsed.data.credits;
    return envelope(200, 'success', knobs.credits);
  }

  function recordInfo(request: Request): Response {
    stats.queries++;
    if (!authorized(request)) return errorEnvelope(401);
    const injected = knobs.queryErrors.shift();
    if (injected !== undefined) return errorEnvelope(injected);
    const taskId = new URL(request.url).searchParams.get('taskId');
    if (!taskId) return errorEnvelope(422, 'taskId is required');
    const task = tasks.get(taskId);
    if (!task) return errorEnvelope(404, `Task not found: ${taskId}`);
    return envelope(200, 'success', record(task));
  }

  /**
   * Known tasks serve once they succeeded. An id in this simulator's format minted before this instance
   * started also serves: the gateway keeps result URLs in its database across restarts, the simulator's
   * memory does not, and the demo's video links should keep playing.
   */
  function servesResult(taskId: string): boolean {
    const task = tasks.get(taskId);
    if (task) return stateOf(task) === 'success';
    const minted = /^task_kling_(\d+)_[0-9a-f]+$/.exec(taskId);
    return minted !== null && Number(minted[1]) < startedAt;
  }

  function linkSignature(taskId: string, expires: string): Buffer {
    return createHmac('sha256', linkKey).update(`${taskId}.${expires}`).digest();
  }

  function freshLink(taskId: string): string {
    const expires = String(Date.now() + knobs.downloadUrlTtlMs);
    const signature = linkSignature(taskId, expires).toString('base64url');
    return `${resultUrl(taskId)}?expires=${expires}&signature=${signature}`;
  }

  /** The plain result URL until `resultUrlTtlMs` after the task ended; a signed link until its own expiry. */
  function linkValid(url: URL, taskId: string): boolean {
    const expires = url.searchParams.get('expires');
    const signature = url.searchParams.get('signature');
    if (expires !== null && signature !== null) {
      const expected = linkSignature(taskId, expires);
      const given = Buffer.from(signature, 'base64url');
      return (
        given.length === expected.length && timingSafeEqual(given, expected) && Date.now() < Number(expires)
      );
    }
    const task = tasks.get(taskId);
    const endedAt = task ? task.createTime + 3 * task.stepMs : startedAt;
    return Date.now() < endedAt + knobs.resultUrlTtlMs;
  }

  async function result(request: Request, taskId: string): Promise<Response> {
    stats.resultRequests++;
    await pause(knobs.resultDelayMs, request.signal);
    if (!servesResult(taskId)) return errorEnvelope(404, 'Result not found');
    if (!linkValid(new URL(request.url), taskId)) {
      return new Response('Request has expired', { status: 403, headers: { 'content-type': 'text/plain' } });
    }
    const injected = knobs.resultErrors.shift();
    if (injected !== undefined) return errorEnvelope(injected);
    if (request.method !== 'HEAD') stats.resultDownloads++;
    return serveBytes(request, await loadSample(), 'video/mp4');
  }

  /** A file as a CDN serves it: one `bytes=` range honoured, HEAD answered without a body. */
  function serveBytes(request: Request, bytes: Uint8Array<ArrayBuffer>, contentType: string): Response {
    const size = bytes.byteLength;
    const headers: Record<string, string> = {
      'content-type': contentType,
      'accept-ranges': 'bytes',
      'cache-control': 'public, max-age=86400',
      // Like kie's storage, any app's page may play it (the gateway's default would allow its own origin only).
      'cross-origin-resource-policy': 'cross-origin',
    };
    const head = request.method === 'HEAD';
    const range = parseRange(request.headers.get('range'), size);
    if (range === 'unsatisfiable') {
      return new Response(null, { status: 416, headers: { ...headers, 'content-range': `bytes */${size}` } });
    }
    if (range === undefined) {
      headers['content-length'] = String(size);
      return new Response(head ? null : bytes, { status: 200, headers });
    }
    headers['content-range'] = `bytes ${range.start}-${range.end}/${size}`;
    headers['content-length'] = String(range.end - range.start + 1);
    return new Response(head ? null : bytes.slice(range.start, range.end + 1), { status: 206, headers });
  }

  /** kie's download-url: a fresh link for a file kie generated (here: a result it serves), 422 otherwise. */
  async function downloadUrl(request: Request): Promise<Response> {
    if (!authorized(request)) return errorEnvelope(401);
    stats.downloadUrlRequests++;
    const injected = knobs.downloadUrlErrors.shift();
    if (injected !== undefined) return errorEnvelope(injected);
    let url: URL;
    try {
      const body = JSON.parse(await request.text()) as { url?: unknown };
      url = new URL(String(body.url));
    } catch {
      return errorEnvelope(422, 'url must be a URL kie generated');
    }
    const path = url.href.startsWith(`${resultBaseUrl}/`)
      ? url.href.slice(resultBaseUrl.length).split(/[?#]/)[0]
      : undefined;
    const taskId = path === undefined ? undefined : resultTaskId(path);
    if (!taskId || !servesResult(taskId)) return errorEnvelope(422, 'url was not generated by kie');
    stats.downloadUrls++;
    return envelope(200, 'success', freshLink(taskId));
  }

  async function handle(request: Request, pathname: string): Promise<Response> {
    const method = request.method;
    if (method === 'POST' && pathname === '/api/v1/jobs/createTask') return createTask(request);
    if (method === 'GET' && pathname === '/api/v1/jobs/recordInfo') return recordInfo(request);
    if (method === 'POST' && pathname === '/api/v1/common/download-url') return downloadUrl(request);
    if (method === 'GET' && pathname === '/api/v1/chat/credit') {
      stats.creditChecks++;
      return authorized(request) ? envelope(200, 'success', knobs.credits) : errorEnvelope(401);
    }
    if (method === 'POST' && pathname === '/admin/credits') return setCredits(request);
    const resultOf = resultTaskId(pathname);
    if ((method === 'GET' || method === 'HEAD') && resultOf) return result(request, resultOf);
    if (method === 'POST' && pathname === '/api/file-stream-upload') return fileStreamUpload(request);
    const reading = method === 'GET' || method === 'HEAD';
    if (reading && pathname.startsWith('/files/')) {
      const upload = uploads.get(pathname.slice('/files/'.length));
      return upload
        ? serveBytes(request, upload.bytes, upload.mimeType)
        : errorEnvelope(404, 'File not found');
    }
    const sample =
      reading && pathname.startsWith('/samples/') ? samples[pathname.slice('/samples/'.length)] : undefined;
    if (sample) return serveBytes(request, await loadAsset(sample.asset), sample.type);
    return errorEnvelope(404, 'Not found');
  }

  return {
    handle,
    knobs,
    stats,
    taskState(taskId) {
      const task = tasks.get(taskId);
      return task ? stateOf(task) : undefined;
    },
    uploadedFiles() {
      return [...uploads.values()];
    },
    createdTasks() {
      return [...tasks.values()].map((task) => ({
        taskId: task.taskId,
        at: task.createTime,
        callBackUrl: task.callBackUrl,
      }));
    },
    close() {
      closed = true;
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      for (const release of [...releases]) release();
      closing.abort();
    },
  };
}

/** A standalone simulator on its own node:http server, for tests and for pointing KIE_API_URL at. */
export async function startSimulatorServer(
  options: Omit<KieSimulatorOptions, 'resultBaseUrl'> & { host?: string; port?: number },
): Promise<SimulatorServer> {
  const { host = '127.0.0.1', port = 0, ...simulatorOptions } = options;
  let simulator: KieSimulator | undefined;
  const adapter = createServerAdapter((request: Request) => {
    if (!simulator) return errorEnvelope(455);
    return simulator.handle(request, new URL(request.url).pathname);
  });
  const server = createServer(adapter);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  // A wildcard bind is reachable on loopback; that is the address callers of a local fake can use.
  const reachable = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  const url = `http://${reachable.includes(':') ? `[${reachable}]` : reachable}:${address.port}`;
  simulator = createKieSimulator({ ...simulatorOptions, resultBaseUrl: url });
  const started = simulator;
  return {
    url,
    simulator: started,
    async close() {
      started.close();
      await new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      });
      await adapter.dispose();
    },
  };
}
