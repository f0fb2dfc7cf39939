import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { AvatarTaskRow } from '../db/schema.js';
import type { Metrics } from '../metrics.js';
import { UpstreamTaskMismatchError } from '../tasks/errors.js';
import type { TaskService } from '../tasks/service.js';
import { inSpan, SpanKind, TASK_ID } from '../telemetry/tracing.js';
import { KieError } from '../upstream/errors.js';
import { parseUpstreamRecord, UpstreamRecordError } from '../upstream/record.js';
import type { SeenSignatures } from './seen-signatures.js';

export const CALLBACK_PATH_PREFIX = '/callbacks/kie/';
export const MAX_CALLBACK_BYTES = 64 * 1024;
/** kie documents no replay window for its signature; callbacks older or newer than this are refused. */
export const SIGNATURE_WINDOW_SECONDS = 300;
/** How much of an oversized callback body is read and dropped so the sender still gets its 413. */
const MAX_DRAIN_BYTES = 1024 * 1024;

export interface KieCallbackOptions {
  service: TaskService;
  hmacKey: string | undefined;
  /** With an HMAC key, where signatures already used are remembered, so a replayed one changes nothing. */
  seenSignatures: SeenSignatures;
  /** A success callback is confirmed with one recordInfo, and kie's answer is what is stored. */
  confirmCallbacks: boolean;
  logger: Logger;
  metrics: Metrics;
  now?: () => number;
}

const envelopeSchema = z.object({ data: z.unknown() });

/** What a callback answer reads of its request: node's own request or a fetch `Request` alike. */
export interface CallbackRequest {
  method: string;
  /** A header's value (duplicates joined with ", "), or null when it was not sent. */
  header(name: string): string | null;
  /** The body's chunks; stopping the iteration early cuts the transfer. */
  body: AsyncIterable<Uint8Array> | null;
}

export interface CallbackAnswer {
  status: number;
  message: string;
}

/** The JSON body every callback answer has. */
export function callbackAnswerBody(answer: CallbackAnswer): string {
  return JSON.stringify({ ok: answer.status === 200, message: answer.message });
}

/**
 * kie's callback: `POST /callbacks/kie/<taskId>/<secret>`. The per-task secret proves the URL was ours for
 * this task; the optional HMAC proves kie sent it. Nothing is written unless both hold, and the snapshot goes
 * through the same state machine as the poller's, so duplicates and stale callbacks change nothing.
 */
export function answerKieCallback(
  request: CallbackRequest,
  pathname: string,
  options: KieCallbackOptions,
): Promise<CallbackAnswer> {
  const path = callbackPath(pathname);
  return inSpan(
    'kie.callback',
    { kind: SpanKind.SERVER, attributes: { [TASK_ID]: path.taskId } },
    async (span) => {
      const result = await answer(request, path, options);
      span.setAttribute('http.response.status_code', result.status);
      options.metrics.callbacks.inc({ status: String(result.status) });
      return result;
    },
  );
}

/** The callback as a yoga route, for what the node route leaves to yoga (see callback-route.ts). */
export async function handleKieCallback(
  request: Request,
  pathname: string,
  options: KieCallbackOptions,
): Promise<Response> {
  const answered = await answerKieCallback(
    {
      method: request.method,
      header: (name) => request.headers.get(name),
      // Node's and whatwg-node's streams are async iterable; the DOM typings do not say so.
      body: request.body as AsyncIterable<Uint8Array> | null,
    },
    pathname,
    options,
  );
  return new Response(callbackAnswerBody(answered), {
    status: answered.status,
    headers: { 'content-type': 'application/json' },
  });
}

/** `<taskId>/<secret>` after the prefix; anything else (a part missing, one too many) names no task. */
interface CallbackPath {
  taskId: string;
  secret: string;
  wellFormed: boolean;
}

function callbackPath(pathname: string): CallbackPath {
  const [taskId = '', secret = '', ...rest] = pathname.slice(CALLBACK_PATH_PREFIX.length).split('/');
  return { taskId, secret, wellFormed: taskId !== '' && secret !== '' && rest.length === 0 };
}

async function answer(
  request: CallbackRequest,
  { taskId, secret, wellFormed }: CallbackPath,
  options: KieCallbackOptions,
): Promise<CallbackAnswer> {
  if (request.method !== 'POST') return reply(405, 'use POST');
  if (!wellFormed) return reply(404, 'no such task');

  const body = await readCapped(request, MAX_CALLBACK_BYTES);
  if (body === null) return reply(413, `body over ${MAX_CALLBACK_BYTES} bytes`);
  let snapshot: ReturnType<typeof parseUpstreamRecord>;
  try {
    snapshot = parseUpstreamRecord(envelopeSchema.parse(JSON.parse(body)).data);
  } catch (error) {
    const detail = error instanceof UpstreamRecordError ? error.message : 'body is not a kie callback';
    return reply(400, detail);
  }

  const { service, logger } = options;
  let signature: string | undefined;
  try {
    // The HMAC needs no row: checked first, so that only a signature kie made is recorded with the lookup.
    const problem = options.hmacKey
      ? checkSignature(request, snapshot.upstreamTaskId, options.hmacKey, options.now ?? Date.now)
      : null;
    let task: AvatarTaskRow | undefined;
    let firstUse = true;
    if (options.hmacKey && !problem) {
      signature = request.header('x-webhook-signature') ?? '';
      const timestamp = Number(request.header('x-webhook-timestamp'));
      const expiresAt = new Date((timestamp + SIGNATURE_WINDOW_SECONDS) * 1000);
      ({ task, firstUse } = await options.seenSignatures.taskRecordingFirstUse(taskId, signature, expiresAt));
    } else {
      task = await service.repository.findById(taskId);
    }
    // Refused in the order the checks ran before the signature was recorded with the lookup.
    const refusal = !task
      ? reply(404, 'no such task')
      : !sameSecret(secret, task.callbackSecret)
        ? reply(401, 'bad callback secret')
        : problem && reply(401, problem);
    if (!task || refusal) {
      // Not this callback's to keep: kie's own use of the signature must still count as its first.
      if (signature !== undefined && firstUse) await options.seenSignatures.forget(signature).catch(() => {});
      return refusal || reply(404, 'no such task');
    }
    if (!firstUse) {
      logger.warn({ taskId, upstreamTaskId: snapshot.upstreamTaskId }, 'kie callback signature replayed');
      return reply(200, 'duplicate: this signature was already used; nothing changed');
    }
    const applied = options.confirmCallbacks ? await service.confirmed(snapshot) : snapshot;
    // The row just read is where the transition starts; it reads again only if the task changed meanwhile.
    const result = await service.applyUpstream(task, applied, 'CALLBACK');
    logger.info(
      { taskId, upstreamTaskId: snapshot.upstreamTaskId, state: snapshot.state, changed: result?.changed },
      'kie callback',
    );
    return reply(200, result?.changed ? 'applied' : 'nothing to change');
  } catch (error) {
    if (error instanceof UpstreamTaskMismatchError) return reply(401, 'callback is for another task');
    if (error instanceof KieError && error.kind === 'rejected') {
      return reply(401, 'kie does not confirm this callback');
    }
    if (signature !== undefined) await options.seenSignatures.forget(signature).catch(() => {});
    logger.error({ err: error, taskId }, 'callback could not be stored');
    return reply(503, 'could not store the callback; retry later');
  }
}

function checkSignature(
  request: CallbackRequest,
  upstreamTaskId: string,
  key: string,
  now: () => number,
): string | null {
  const timestamp = request.header('x-webhook-timestamp');
  const signature = request.header('x-webhook-signature');
  if (!timestamp || !signature) return 'missing webhook signature';
  const seconds = Number(timestamp);
  if (!/^\d+$/.test(timestamp) || Math.abs(now() / 1000 - seconds) > SIGNATURE_WINDOW_SECONDS) {
    return 'webhook timestamp outside the accepted window';
  }
  const expected = createHmac('sha256', key).update(`${upstreamTaskId}.${timestamp}`).digest('base64');
  return sameSecret(signature, expected) ? null : 'bad webhook signature';
}

/** Constant-time comparison that also hides the length of the expected value. */
function sameSecret(given: string, expected: string): boolean {
  const digest = (value: string) => createHash('sha256').update(value).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

/** The body as text, or null when it is larger than `limit` bytes, without buffering more than that. */
async function readCapped(request: CallbackRequest, limit: number): Promise<string | null> {
  const declared = Number(request.header('content-length') ?? 0);
  if (declared > limit) return null;
  if (!request.body) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  // An oversized body is read to its end and dropped, so the sender gets its 413: stopping early would
  // either cancel the stream (the socket is destroyed and the sender sees an empty reply) or leave the
  // sender blocked on a body nobody reads. Past MAX_DRAIN_BYTES the connection is cut instead: leaving the
  // loop cancels the stream.
  for await (const chunk of request.body) {
    size += chunk.byteLength;
    if (size > MAX_DRAIN_BYTES) return null;
    if (size <= limit) chunks.push(chunk);
  }
  return size > limit ? null : Buffer.concat(chunks).toString('utf8');
}

function reply(status: number, message: string): CallbackAnswer {
  return { status, message };
}
