import type { Span } from '@opentelemetry/api';
import type { Logger } from 'pino';
import { Agent, request, FormData as UndiciFormData, fetch as undiciFetch } from 'undici';
import type { Metrics } from '../metrics.js';
import type { UpstreamSnapshot } from '../tasks/states.js';
import { inSpan, SpanKind } from '../telemetry/tracing.js';
import { KieError, kindForCode } from './errors.js';
import type { SlidingWindowLimiter } from './rate-limiter.js';
import { parseUpstreamRecord } from './record.js';

export type KieModel = 'kling/ai-avatar-pro' | 'kling/ai-avatar-standard';

export interface CreateTaskRequest {
  model: KieModel;
  callBackUrl: string;
  input: { image_url: string; audio_url: string; prompt: string };
}

/** A file for kie's file-stream-upload: kie keeps it 3 days and answers with a URL a task can use. */
export interface KieUpload {
  bytes: Uint8Array<ArrayBuffer>;
  /** Unique: kie overwrites a file uploaded again under the same name. */
  fileName: string;
  mimeType: string;
}

export interface KieClientOptions {
  apiUrl: string;
  /** kie's file-upload host (KIE_UPLOAD_URL); the API's host when unset, as on the simulator. */
  uploadUrl?: string;
  apiKey: string;
  /** How long one upload may take, the bytes sent included. */
  uploadTimeoutMs?: number;
  /** How long a query (recordInfo, credit) may take, connection included. */
  timeoutMs: number;
  /**
   * How long a create may wait for kie's answer. kie can take tens of seconds to answer a create it accepts,
   * and a create that times out has an unknown outcome (paid or not), so this is much longer than a query's.
   */
  createTimeoutMs?: number;
  /**
   * How long establishing the connection may take. Nothing has been sent until it is established, so a
   * failure here is safe to resend even for a paid create; it is kept short, apart from the answer's wait.
   */
  connectTimeoutMs?: number;
  /** kie's query limit, shared by every caller in this process. */
  queryLimiter: SlidingWindowLimiter;
  logger: Logger;
  metrics: Metrics;
  fetchImpl?: typeof fetch;
}

// Errors thrown by fetch before a byte of the request reached kie (no connection was ever established):
// resending is safe even for a paid create.
const notSentCodes = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EAI_NONAME',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EHOSTDOWN',
  'ENETDOWN',
  'UND_ERR_CONNECT_TIMEOUT',
]);
const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
const QUERY_ATTEMPTS = 3;
const UPLOAD_ATTEMPTS = 2;
const DEFAULT_UPLOAD_TIMEOUT_MS = 60_000;
/** Where the gateway's uploads go in kie's file store. */
const UPLOAD_PATH = 'avatar-gateway';

export class KieClient {
  private readonly fetch: typeof fetch;

  private readonly agent: Agent | undefined;

  constructor(private readonly options: KieClientOptions) {
    if (options.fetchImpl) {
      this.fetch = options.fetchImpl;
    } else {
      // undici's own fetch and Agent, for a connect timeout of its own (Node's fetch has only the 10 s default).
      this.agent = new Agent({
        connect: { timeout: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS },
      });
      const agent = this.agent;
      this.fetch = ((url: string, init: RequestInit) =>
        undiciFetch(url, { ...(init as object), dispatcher: agent })) as unknown as typeof fetch;
    }
  }

  /** Closes kept-alive connections to kie. */
  async close(): Promise<void> {
    await this.agent?.close();
  }

  /**
   * Submits one paid task. Never retried here: a retry after an unknown outcome could pay twice, so the
   * caller decides from the error's kind. The caller also takes the slot in kie's create limit, because it
   * must know before it stores a task whether the task can be sent now.
   */
  async createTask(request: CreateTaskRequest): Promise<{ taskId: string }> {
    const data = await this.call(
      'createTask',
      'POST',
      '/api/v1/jobs/createTask',
      request,
      this.options.createTimeoutMs ?? this.options.timeoutMs,
    );
    const taskId = (data as { taskId?: unknown } | null)?.taskId;
    if (typeof taskId !== 'string' || taskId === '') {
      // kie said 200 but gave no id: it may well have created the task.
      throw new KieError('unknown_outcome', 200, 'kie accepted the task but returned no taskId');
    }
    return { taskId };
  }

  /** The poller's source of truth. Retries retryable failures with jittered backoff, within the query limit. */
  async recordInfo(taskId: string): Promise<UpstreamSnapshot> {
    for (let attempt = 1; ; attempt++) {
      await this.options.queryLimiter.take();
      try {
        const data = await this.call(
          'recordInfo',
          'GET',
          `/api/v1/jobs/recordInfo?taskId=${encodeURIComponent(taskId)}`,
        );
        return parseUpstreamRecord(data);
      } catch (error) {
        const retry =
          error instanceof KieError &&
          (error.retryable || error.kind === 'unknown_outcome') &&
          attempt < QUERY_ATTEMPTS;
        if (!retry) throw error;
        await sleep(jitteredBackoffMs(attempt));
      }
    }
  }

  /**
   * A fresh link (kie says: valid 20 minutes) for a file kie generated, such as a result video whose own URL
   * has expired. kie answers 422 for URLs it did not generate. Not counted against the task-query limit.
   */
  async downloadUrl(url: string): Promise<string> {
    const data = await this.call('downloadUrl', 'POST', '/api/v1/common/download-url', { url });
    if (typeof data !== 'string' || !/^https?:\/\//.test(data)) {
      throw new KieError('retryable', 200, 'kie answered download-url without a link');
    }
    return data;
  }

  /**
   * Streams a file to kie's file-stream-upload and returns the URL kie serves it at. Uploads are free and a
   * unique name makes a second attempt overwrite the first, so a failure kie may retry is tried once more.
   */
  async uploadFile(upload: KieUpload): Promise<string> {
    for (let attempt = 1; ; attempt++) {
      const form = this.options.fetchImpl ? new FormData() : new UndiciFormData();
      form.append('file', new Blob([upload.bytes], { type: upload.mimeType }), upload.fileName);
      form.append('uploadPath', UPLOAD_PATH);
      form.append('fileName', upload.fileName);
      try {
        const data = (await this.call(
          'fileUpload',
          'POST',
          '/api/file-stream-upload',
          form as FormData,
          this.options.uploadTimeoutMs ?? DEFAULT_UPLOAD_TIMEOUT_MS,
          this.options.uploadUrl ?? this.options.apiUrl,
        )) as { downloadUrl?: unknown; fileUrl?: unknown } | null;
        // Sources disagree on the field's name.
        const url = data?.downloadUrl ?? data?.fileUrl;
        if (typeof url !== 'string' || !/^https?:\/\//.test(url)) {
          throw new KieError('retryable', 200, 'kie accepted the upload but returned no file URL');
        }
        return url;
      } catch (error) {
        const retry =
          error instanceof KieError &&
          (error.retryable || error.kind === 'unknown_outcome') &&
          attempt < UPLOAD_ATTEMPTS;
        if (!retry) throw error;
        await sleep(jitteredBackoffMs(attempt));
      }
    }
  }

  /** Credits left on the account. */
  async credits(): Promise<number> {
    await this.options.queryLimiter.take();
    const data = await this.call('credit', 'GET', '/api/v1/chat/credit');
    return Number(data);
  }

  private call(
    operation: string,
    method: 'GET' | 'POST',
    path: string,
    body?: unknown,
    timeoutMs: number = this.options.timeoutMs,
    baseUrl: string = this.options.apiUrl,
  ): Promise<unknown> {
    return inSpan(
      `kie.${operation}`,
      { kind: SpanKind.CLIENT, attributes: { 'http.request.method': method, 'url.path': path } },
      (span) => this.callTraced(span, operation, method, path, body, timeoutMs, baseUrl),
    );
  }

  private async callTraced(
    span: Span,
    operation: string,
    method: 'GET' | 'POST',
    path: string,
    body: unknown,
    timeoutMs: number,
    baseUrl: string,
  ): Promise<unknown> {
    const started = performance.now();
    let code = 0;
    try {
      let response: KieAnswer;
      try {
        response = await this.send(`${baseUrl}${path}`, method, body, AbortSignal.timeout(timeoutMs));
      } catch (error) {
        throw networkError(error);
      }
      const text = await response.text().catch(() => '');
      const envelope = parseEnvelope(text);
      code = envelope?.code ?? response.status;
      const ok = response.status >= 200 && response.status < 300;
      if (ok && code === 200) return envelope?.data ?? null;
      if (!envelope && ok) {
        throw new KieError('unknown_outcome', response.status, 'kie answered with a body that is not JSON');
      }
      const message = envelope?.message ?? `HTTP ${response.status}`;
      throw new KieError(kindForCode(code), code, `kie ${code}: ${message}`);
    } finally {
      const seconds = (performance.now() - started) / 1000;
      span.setAttribute('kie.code', code);
      this.options.metrics.upstreamCalls.inc({ operation, code: String(code) });
      this.options.metrics.upstreamDuration.observe({ operation }, seconds);
      this.options.logger.info(
        { upstream: { operation, method, code, ms: Math.round(seconds * 1000) } },
        'kie call',
      );
    }
  }

  /**
   * Sends one call. JSON and bodiless calls go through undici's `request`, which costs a third of the CPU of
   * its `fetch` (no WHATWG Request, Response and streams around each call; it follows no redirect): a page of
   * old results refreshes a link per result, and every create is a call. Forms (uploads), and a `fetchImpl`
   * given in the options, go through fetch. Errors are the same for both: the connection's own (ECONNREFUSED,
   * UND_ERR_CONNECT_TIMEOUT, UND_ERR_SOCKET...) and the signal's TimeoutError, which `networkError` reads.
   */
  private async send(
    url: string,
    method: 'GET' | 'POST',
    body: unknown,
    signal: AbortSignal,
  ): Promise<KieAnswer> {
    const authorization = `Bearer ${this.options.apiKey}`;
    const form = body instanceof FormData || body instanceof UndiciFormData;
    if (this.agent && !form) {
      const answer = await request(url, {
        method,
        headers:
          body === undefined ? { authorization } : { authorization, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
        dispatcher: this.agent,
      });
      return { status: answer.statusCode, text: () => answer.body.text() };
    }
    const response = await this.fetch(url, {
      method,
      // A form is sent as multipart, its boundary in the content type fetch writes.
      headers:
        body === undefined || form
          ? { authorization }
          : { authorization, 'content-type': 'application/json' },
      body: body === undefined ? undefined : form ? (body as FormData) : JSON.stringify(body),
      signal,
    });
    return { status: response.status, text: () => response.text() };
  }
}

/** kie's answer to one call: its HTTP status and its body. */
interface KieAnswer {
  status: number;
  text(): Promise<string>;
}

function parseEnvelope(
  text: string,
): { code: number | undefined; message: string | undefined; data: unknown } | null {
  try {
    const value = JSON.parse(text) as { code?: unknown; msg?: unknown; message?: unknown; data?: unknown };
    if (typeof value !== 'object' || value === null) return null;
    const message =
      typeof value.msg === 'string'
        ? value.msg
        : typeof value.message === 'string'
          ? value.message
          : undefined;
    return { code: typeof value.code === 'number' ? value.code : undefined, message, data: value.data };
  } catch {
    return null;
  }
}

/** What a failed fetch says about whether kie may have received the request. */
export function networkError(error: unknown): KieError {
  const code = connectionCode(error);
  if (code && notSentCodes.has(code)) {
    return new KieError('retryable', 0, `kie unreachable, nothing sent (${code})`);
  }
  const reason = error instanceof Error && error.name === 'TimeoutError' ? 'timed out' : 'connection failed';
  return new KieError('unknown_outcome', 0, `kie call ${reason} before an answer`);
}

/** The system or undici error code of a failed fetch: on the error's cause, or on that cause's cause. */
function connectionCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 3 && current && typeof current === 'object'; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

export function jitteredBackoffMs(attempt: number, baseMs = 200, capMs = 5000): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** (attempt - 1));
  return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
