import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { AvatarTaskRow } from '../db/schema.js';
import type { EventBus } from '../events/bus.js';
import {
  type InputMedia,
  type InspectedUpload,
  MediaRejectedError,
  type UploadedFile,
} from '../inputs/input-media.js';
import type { MediaKind } from '../inputs/media.js';
import type { Metrics } from '../metrics.js';
import { currentTraceParent, inSpan, SpanKind, TASK_ID } from '../telemetry/tracing.js';
import type { CreditBreaker } from '../upstream/credit-breaker.js';
import { KieError } from '../upstream/errors.js';
import { jitteredBackoffMs, type KieClient, type KieModel } from '../upstream/kie-client.js';
import { estimateCredits } from '../upstream/pricing.js';
import {
  AlreadySubmittedError,
  IdempotencyKeyReusedError,
  InsufficientCreditsError,
  InvalidInputError,
  QuotaExceededError,
  RateLimitedError,
  TaskNotFoundError,
  UpstreamRejectedError,
  UpstreamTaskMismatchError,
  UpstreamUnavailableError,
} from './errors.js';
import { whileLeased } from './lease.js';
import type { CreateWindow, TaskPatch, TaskRepository, TransitionResult, UserQuota } from './repository.js';
import {
  type AvatarTaskEventSource,
  isTerminal,
  type TaskFailure,
  targetFromSnapshot,
  type UpstreamSnapshot,
} from './states.js';

export type AvatarModel = 'PRO' | 'STANDARD';

export interface CreateTaskInput {
  /** Exactly one of imageUrl and image, and of audioUrl and audio. */
  imageUrl?: string | null | undefined;
  audioUrl?: string | null | undefined;
  image?: UploadedFile | null | undefined;
  audio?: UploadedFile | null | undefined;
  prompt?: string | null | undefined;
  model?: AvatarModel | null | undefined;
  idempotencyKey?: string | null | undefined;
}

export const upstreamModels: Record<AvatarModel, KieModel> = {
  PRO: 'kling/ai-avatar-pro',
  STANDARD: 'kling/ai-avatar-standard',
};

/**
 * Text Postgres and kie can take: a NUL byte is refused by Postgres (it surfaced as a masked database
 * error) and an unpaired surrogate has no UTF-8 form, so either is bad input, found before anything is spent.
 */
const unpairedSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const cleanText = () =>
  z.string().refine((value) => !value.includes('\u0000') && !unpairedSurrogate.test(value), {
    message: 'must not contain NUL characters or unpaired surrogates',
    abort: true,
  });

const mediaUrl = cleanText()
  .max(2048, 'must be at most 2048 characters')
  .refine((value) => {
    try {
      const url = new URL(value);
      return (url.protocol === 'http:' || url.protocol === 'https:') && url.hostname !== '';
    } catch {
      return false;
    }
  }, 'must be an absolute http or https URL');

const uploadedFile = z.custom<UploadedFile>(
  (value) =>
    typeof value === 'object' &&
    value !== null &&
    typeof (value as UploadedFile).size === 'number' &&
    typeof (value as UploadedFile).arrayBuffer === 'function',
  'must be a file of the multipart request',
);

const inputSchema = z.object({
  imageUrl: mediaUrl.nullish(),
  audioUrl: mediaUrl.nullish(),
  image: uploadedFile.nullish(),
  audio: uploadedFile.nullish(),
  prompt: cleanText().max(5000, 'must be at most 5000 characters').nullish(),
  model: z.enum(['PRO', 'STANDARD']).nullish(),
  idempotencyKey: cleanText()
    .min(1, 'must not be empty')
    .max(255, 'must be at most 255 characters')
    .nullish(),
});

export interface TaskServiceOptions {
  repository: TaskRepository;
  bus: EventBus;
  kie: KieClient;
  /** Holds creates back for a while after kie said the account is out of credits. */
  creditBreaker: CreditBreaker;
  /** Checks URL inputs and inspects uploads before anything is paid. */
  media: InputMedia;
  /** kie's account limit on creates, shared through the database by every instance. */
  createWindow: Omit<CreateWindow, 'leaseMs'>;
  quota: UserQuota;
  logger: Logger;
  metrics: Metrics;
  /** Base URL kie reaches this gateway at; resolved late because the port may be chosen at start. */
  publicUrl: () => string;
  minPollDelayMs: number;
  /** The first poll is never later than the task's timeout, so the timeout is found on time. */
  taskTimeoutMs: number;
  submitGraceMs: number;
  /** A claimed submit's lease, renewed while kie answers; an instance that dies loses it this soon. */
  submitLeaseMs: number;
  maxPendingSubmits: number;
}

export type SubmitOutcome = 'accepted' | 'queued' | 'unknown' | 'refused' | 'not_claimed';

export interface SubmitResult {
  task: AvatarTaskRow | undefined;
  outcome: SubmitOutcome;
  error?: KieError;
}

/** Hears about every task this instance brought to SUCCEEDED or FAILED, and what brought it there. */
export type SettledListener = (task: AvatarTaskRow, source: AvatarTaskEventSource) => void;

/**
 * The domain's one way in: the mutation, the callback route and the poller all change tasks through here,
 * and every change is published on the bus after it commits.
 */
export class TaskService {
  private readonly settledListeners = new Set<SettledListener>();
  private readonly submitting = new Set<Promise<unknown>>();

  constructor(private readonly options: TaskServiceOptions) {}

  /** The poller listens, to learn whether kie's callbacks arrive and how long tasks take. */
  onSettled(listener: SettledListener): () => void {
    this.settledListeners.add(listener);
    return () => this.settledListeners.delete(listener);
  }

  get repository(): TaskRepository {
    return this.options.repository;
  }

  /**
   * Stores the task before kie hears of it, then queues it for kie in fair turns; when its turn is now, it is
   * submitted before this returns. An idempotent retry returns the stored task, sends nothing and counts
   * against no quota. Refusals kie will repeat are thrown as typed errors (the task stays in the history as
   * FAILED); a full queue or temporary trouble leaves the task PENDING for the submit loop.
   */
  async create(userId: string, rawInput: CreateTaskInput): Promise<AvatarTaskRow> {
    const { repository, quota, maxPendingSubmits } = this.options;
    const input = validateInput(rawInput);
    // Uploads are judged from their bytes before anything else: a bad file costs nothing and sends nothing.
    const [imageUpload, audioUpload] = await bothOrFirstError(
      input.image.file && this.inspectUpload('image', input.image.file),
      input.audio.file && this.inspectUpload('audio', input.audio.file),
    );
    const inputHash = hashInput(input, { image: imageUpload, audio: audioUpload });
    // A retry is answered before anything is fetched or uploaded again, also while kie is out of credits; the
    // insert below still decides races.
    const existing = input.idempotencyKey
      ? await repository.findByIdempotencyKey(userId, input.idempotencyKey)
      : undefined;
    if (existing) return sameInputOrThrow(existing, inputHash);
    // kie is out of credits: nothing is fetched, uploaded, stored or sent.
    if (this.options.creditBreaker.refusing) {
      throw new InsufficientCreditsError(this.options.creditBreaker.refusal);
    }
    const [, audioUrlCheck] = await bothOrFirstError(
      input.image.url && this.checkUrl('image', input.image.url),
      input.audio.url && this.checkUrl('audio', input.audio.url),
    );
    const [imageUrl, audioUrl] = await Promise.all([
      input.image.url ?? this.uploadToKie(imageUpload),
      input.audio.url ?? this.uploadToKie(audioUpload),
    ]);
    const durationSeconds = audioUpload?.durationSeconds ?? audioUrlCheck?.durationSeconds;

    const now = new Date();
    const stored = await repository.insertWithinQuota(
      {
        id: randomUUID(),
        userId,
        model: input.model,
        imageUrl,
        audioUrl,
        prompt: input.prompt,
        estimatedCredits:
          durationSeconds === undefined
            ? null
            : estimateCredits(upstreamModels[input.model], durationSeconds),
        idempotencyKey: input.idempotencyKey,
        inputHash,
        callbackSecret: randomBytes(24).toString('base64url'),
        // The create sends it when its turn has come, or queues it for everyone; if this process dies before
        // either, the queue takes it from here.
        nextCheckAt: new Date(now.getTime() + this.options.submitLeaseMs),
      },
      now,
      { ...quota, maxPendingSubmits },
    );
    if (stored.kind === 'existing') return sameInputOrThrow(stored.task, inputHash);
    if (stored.kind === 'queue_full') throw this.queueFull(stored.queued);
    if (stored.kind === 'quota')
      throw new QuotaExceededError(stored.quota, stored.limit, stored.resetsAt, now);
    const row = stored.task;
    this.options.metrics.transitions.inc({ state: 'PENDING', source: 'MUTATION' });
    await this.publish(row);

    const [own] = await this.submitQueued('MUTATION', row);
    if (!own) return row;
    const { task, outcome, error } = await own;
    if (outcome === 'refused' && error) throw toCreateError(error);
    return task ?? row;
  }

  private async inspectUpload(field: MediaKind, file: UploadedFile): Promise<InspectedUpload> {
    try {
      return await this.options.media.inspectUpload(field, file);
    } catch (error) {
      throw asInvalidInput(field, error);
    }
  }

  private async checkUrl(field: MediaKind, url: string) {
    try {
      return await this.options.media.checkUrl(field, url);
    } catch (error) {
      throw asInvalidInput(`${field}Url`, error);
    }
  }

  /** Uploads are free, so one whose task is then refused (a full quota, say) costs nothing but the bytes. */
  private async uploadToKie(inspected: InspectedUpload | undefined): Promise<string> {
    if (!inspected) throw new Error('an input has neither a URL nor an upload');
    try {
      return await this.options.kie.uploadFile(inspected.upload);
    } catch (error) {
      if (error instanceof KieError) throw toCreateError(error);
      throw error;
    }
  }

  /**
   * The queue's one door to kie: takes what kie's create window has free for the tasks whose turn it is and
   * starts sending them, one promise per task. With `only` (a create's own, just inserted), just that task, and
   * only when its turn has come.
   */
  async submitQueued(
    source: AvatarTaskEventSource,
    only?: AvatarTaskRow,
  ): Promise<Array<Promise<SubmitResult>>> {
    const { repository, createWindow, submitLeaseMs } = this.options;
    if (only === undefined && !(await repository.hasQueuedSubmits())) return [];
    const claimed = await repository.claimQueuedSubmits(
      { ...createWindow, leaseMs: submitLeaseMs },
      only === undefined ? {} : { only },
    );
    return claimed.map(({ task, slotId }) => {
      const sending = this.send(task, source);
      // The slot's end is bookkeeping (it counts from its claim already): a create's answer does not wait for
      // it, a draining stop does.
      this.track(
        sending.finally(() =>
          repository
            .slotUsedUntilNow(slotId)
            .catch((error) => this.options.logger.warn({ err: error }, 'extending a create slot failed')),
        ),
      );
      return sending;
    });
  }

  /** Resolves when every submit in flight has its outcome recorded: a draining stop waits for it. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.submitting]);
  }

  private track<T>(submitting: Promise<T>): Promise<T> {
    this.submitting.add(submitting);
    void submitting.finally(() => this.submitting.delete(submitting)).catch(() => {});
    return submitting;
  }

  /**
   * The queue is bounded for the whole gateway: past MAX_PENDING_SUBMITS waiting tasks a client must back off,
   * and is told for how long the queue needs to drain to that point at kie's rate.
   */
  private queueFull(queued: number): RateLimitedError {
    const { maxPendingSubmits, createWindow } = this.options;
    const excess = queued - maxPendingSubmits + 1;
    const seconds = Math.ceil((excess / createWindow.maxCreates) * (createWindow.windowMs / 1000));
    return new RateLimitedError(Math.max(1, seconds));
  }

  /**
   * Sends a task claimed from the queue to kie, at most once: only the caller that won the claim sends, and
   * an answer that never came leaves the task `unknown` (kie's callback can still claim it) rather than
   * sending it again.
   */
  private send(claimed: AvatarTaskRow, source: AvatarTaskEventSource): Promise<SubmitResult> {
    return inSpan(
      'task.submit',
      { attributes: { [TASK_ID]: claimed.id, 'avatar.task.source': source } },
      () => this.sendTraced(claimed, source),
    );
  }

  private async sendTraced(claimed: AvatarTaskRow, source: AvatarTaskEventSource): Promise<SubmitResult> {
    const id = claimed.id;
    let upstreamTaskId: string;
    try {
      // Renewed while kie takes its time, so no other instance ever takes this create for abandoned.
      ({ taskId: upstreamTaskId } = await whileLeased(
        this.options.repository,
        id,
        this.options.submitLeaseMs,
        this.options.logger,
        () =>
          this.options.creditBreaker.send(() =>
            this.options.kie.createTask({
              model: upstreamModels[claimed.model],
              callBackUrl: this.callbackUrl(claimed),
              input: {
                image_url: claimed.imageUrl,
                audio_url: claimed.audioUrl,
                prompt: claimed.prompt ?? '',
              },
            }),
          ),
      ));
    } catch (error) {
      if (!(error instanceof KieError)) throw error;
      return this.submitFailed(claimed, source, error);
    }

    const now = new Date();
    // From the row as claimed: the write is guarded by its version, so a callback that came meanwhile makes
    // it read the row again.
    const result = await this.change(claimed, source, (task) => ({
      target: { state: 'WAITING' },
      patch: {
        // A callback may have arrived first and claimed the task with the same id.
        upstreamTaskId: task.upstreamTaskId ?? upstreamTaskId,
        submitStatus: 'accepted',
        submittedAt: now,
        leaseUntil: null,
        ...(isTerminal(task.state)
          ? {}
          : {
              nextCheckAt: new Date(
                Math.min(
                  now.getTime() + this.options.minPollDelayMs,
                  task.createdAt.getTime() + this.options.taskTimeoutMs,
                ),
              ),
            }),
      },
    }));
    return { task: result?.task, outcome: 'accepted' };
  }

  private async submitFailed(claimed: AvatarTaskRow, source: AvatarTaskEventSource, error: KieError) {
    const { repository, logger } = this.options;
    const now = Date.now();
    logger.warn(
      { taskId: claimed.id, kind: error.kind, code: error.code },
      `submit failed: ${error.message}`,
    );
    switch (error.kind) {
      case 'retryable': {
        if ((await repository.countQueuedSubmits()) >= this.options.maxPendingSubmits) {
          const failure: TaskFailure = {
            code: 'UPSTREAM_UNAVAILABLE',
            message: `kie is unavailable and the queue is full: ${error.message}`,
          };
          const result = await this.fail(claimed.id, source, failure, { submitStatus: 'refused' });
          return { task: result?.task, outcome: 'refused' as const, error };
        }
        const task = await repository.patch(
          claimed.id,
          {
            submitStatus: 'queued',
            leaseUntil: null,
            nextCheckAt: new Date(now + jitteredBackoffMs(claimed.submitAttempts, 1000, 60_000)),
          },
          { submitStatus: 'in_flight' },
        );
        return { task, outcome: 'queued' as const, error };
      }
      case 'unknown_outcome': {
        const task = await repository.patch(
          claimed.id,
          {
            submitStatus: 'unknown',
            leaseUntil: null,
            nextCheckAt: new Date(now + this.options.submitGraceMs),
          },
          { submitStatus: 'in_flight' },
        );
        return { task, outcome: 'unknown' as const, error };
      }
      case 'insufficient_credits':
      case 'rejected': {
        const code = error.kind === 'insufficient_credits' ? 'INSUFFICIENT_CREDITS' : 'UPSTREAM_REJECTED';
        const result = await this.fail(
          claimed.id,
          source,
          { code, message: error.message },
          { submitStatus: 'refused' },
        );
        return { task: result?.task, outcome: 'refused' as const, error };
      }
    }
  }

  /**
   * Cancels a task kie has not got: it ends CANCELED, frees its place in the queue and in its owner's quota,
   * and is never sent. Only a task still `queued` can be canceled, and the cancel is written only if it still
   * is: the queue claims a task (queued → in_flight) before it sends it, and the two writes exclude each other
   * on the row, so either the cancel lands and no instance ever sends the task, or the claim did and the answer
   * is ALREADY_SUBMITTED. Canceling a CANCELED task again, or one that ended before kie got it, returns it as
   * it is; a task kie has, or may have, is ALREADY_SUBMITTED (kie has no cancel). Another user's task is
   * NOT_FOUND, as a missing one.
   */
  async cancel(userId: string, id: string): Promise<AvatarTaskRow> {
    const task = await this.options.repository.findForUser(userId, id);
    if (!task) throw new TaskNotFoundError();
    const result = await this.change(task, 'MUTATION', (current) =>
      current.state === 'PENDING' && current.submitStatus === 'queued'
        ? {
            target: { state: 'CANCELED', failure: canceledFailure, message: canceledFailure.message },
            patch: { submitStatus: 'canceled' },
          }
        : null,
    );
    const now = result?.task ?? task;
    if (kieMayHave(now)) throw new AlreadySubmittedError(now, alreadySubmittedMessage(now));
    return now;
  }

  /**
   * Applies what kie says about a task, from a callback or a poll, through the state machine. A task whose
   * submit outcome was unknown is claimed here by the id kie reports.
   */
  async applyUpstream(
    task: AvatarTaskRow | string,
    snapshot: UpstreamSnapshot,
    source: AvatarTaskEventSource,
    patch: TaskPatch = {},
  ): Promise<TransitionResult | null> {
    return this.change(task, source, (current) => {
      if (current.upstreamTaskId && current.upstreamTaskId !== snapshot.upstreamTaskId) {
        throw new UpstreamTaskMismatchError(`task ${current.id} is not kie task ${snapshot.upstreamTaskId}`);
      }
      const claim: TaskPatch = current.upstreamTaskId
        ? {}
        : {
            upstreamTaskId: snapshot.upstreamTaskId,
            submitStatus: 'accepted',
            submittedAt: current.submittedAt ?? new Date(),
          };
      // What kie charged is kept from whichever record reports it, also one that changes no state.
      const charged: TaskPatch =
        snapshot.creditsCharged === undefined ? {} : { creditsCharged: snapshot.creditsCharged };
      return { target: targetFromSnapshot(snapshot), patch: { ...claim, ...charged, ...patch } };
    });
  }

  /**
   * What kie itself says about a task a callback reports as succeeded: one recordInfo, so a forged success
   * body (its URL secret leaked, no signature to check) cannot store a result kie never made. Other states
   * are taken as they are: they store no result, and the poller checks them anyway.
   */
  async confirmed(snapshot: UpstreamSnapshot): Promise<UpstreamSnapshot> {
    if (snapshot.state !== 'success') return snapshot;
    return this.options.kie.recordInfo(snapshot.upstreamTaskId);
  }

  async fail(
    id: string,
    source: AvatarTaskEventSource,
    failure: TaskFailure,
    patch: TaskPatch = {},
  ): Promise<TransitionResult | null> {
    return this.change(id, source, () => ({
      target: { state: 'FAILED', failure, message: failure.message },
      patch,
    }));
  }

  private async change(
    task: AvatarTaskRow | string,
    source: AvatarTaskEventSource,
    decide: Parameters<TaskRepository['transition']>[2],
  ): Promise<TransitionResult | null> {
    const result = await this.options.repository.transition(task, source, decide);
    if (result?.changed) {
      this.options.metrics.transitions.inc({ state: result.task.state, source });
      await this.publish(result.task);
      if (isTerminal(result.task.state)) {
        for (const listener of this.settledListeners) listener(result.task, source);
      }
    }
    return result;
  }

  private async publish(task: AvatarTaskRow): Promise<void> {
    try {
      await inSpan(
        'task.publish',
        {
          kind: SpanKind.PRODUCER,
          attributes: {
            [TASK_ID]: task.id,
            'avatar.task.version': task.version,
            'avatar.task.state': task.state,
          },
        },
        // The signal carries this span, so each subscriber's delivery, on any instance, is its child.
        () =>
          this.options.bus.publish({
            taskId: task.id,
            userId: task.userId,
            version: task.version,
            trace: currentTraceParent(),
          }),
      );
    } catch (error) {
      // The change is committed; subscribers catch up on their next signal or resync.
      this.options.logger.error({ err: error, taskId: task.id }, 'publishing a task change failed');
    }
  }

  callbackUrl(task: Pick<AvatarTaskRow, 'id' | 'callbackSecret'>): string {
    return `${this.options.publicUrl()}/callbacks/kie/${task.id}/${task.callbackSecret}`;
  }
}

/** One of a task's two media inputs: a URL, or a file uploaded with the request. */
type MediaInput = { url: string; file?: undefined } | { url?: undefined; file: UploadedFile };

type ValidInput = {
  image: MediaInput;
  audio: MediaInput;
  prompt: string | null;
  model: AvatarModel;
  idempotencyKey: string | null;
};

function validateInput(input: CreateTaskInput): ValidInput {
  const parsed = inputSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = String(issue?.path[0] ?? 'input');
    throw new InvalidInputError(field, `${field} ${issue?.message ?? 'is invalid'}`);
  }
  const { imageUrl, audioUrl, image, audio, prompt, model, idempotencyKey } = parsed.data;
  return {
    image: exactlyOne('image', imageUrl, image),
    audio: exactlyOne('audio', audioUrl, audio),
    prompt: prompt ?? null,
    model: model ?? 'PRO',
    idempotencyKey: idempotencyKey ?? null,
  };
}

function exactlyOne(
  field: MediaKind,
  url: string | null | undefined,
  file: UploadedFile | null | undefined,
): MediaInput {
  if (url && file) throw new InvalidInputError(field, `give ${field} or ${field}Url, not both`);
  if (url) return { url };
  if (file) return { file };
  throw new InvalidInputError(`${field}Url`, `${field}Url or ${field} is required`);
}

/** Both at once; when both fail, the image's error, so a client is always told the same field first. */
async function bothOrFirstError<A, B>(
  image: Promise<A> | undefined | '',
  audio: Promise<B> | undefined | '',
): Promise<[A | undefined, B | undefined]> {
  const [a, b] = await Promise.allSettled([image || undefined, audio || undefined]);
  if (a.status === 'rejected') throw a.reason;
  if (b.status === 'rejected') throw b.reason;
  return [a.value, b.value];
}

function asInvalidInput(field: string, error: unknown): unknown {
  return error instanceof MediaRejectedError
    ? new InvalidInputError(field, `${field} ${error.message}`)
    : error;
}

/**
 * An uploaded file counts by its bytes, so a retried upload with the same key is the same input; a URL
 * counts as written, which keeps the hashes of tasks stored before uploads existed.
 */
function hashInput(
  input: ValidInput,
  uploads: { image: InspectedUpload | undefined; audio: InspectedUpload | undefined },
): string {
  const ref = (media: MediaInput, upload: InspectedUpload | undefined) =>
    media.url ?? `upload:sha256:${upload?.sha256}`;
  const canonical = JSON.stringify([
    input.model,
    ref(input.image, uploads.image),
    ref(input.audio, uploads.audio),
    input.prompt ?? '',
  ]);
  return createHash('sha256').update(canonical).digest('hex');
}

function sameInputOrThrow(existing: AvatarTaskRow, inputHash: string): AvatarTaskRow {
  if (existing.inputHash !== inputHash) throw new IdempotencyKeyReusedError();
  return existing;
}

const canceledFailure: TaskFailure = {
  code: 'CANCELED',
  message: 'Canceled by its owner before it was sent to kie.ai; it was never rendered or charged',
};

/** Whether kie has the task or may have it: its create was answered, is under way, or its answer was lost. */
function kieMayHave(task: AvatarTaskRow): boolean {
  return (
    task.upstreamTaskId !== null ||
    task.submitStatus === 'in_flight' ||
    task.submitStatus === 'unknown' ||
    task.submitStatus === 'accepted'
  );
}

function alreadySubmittedMessage(task: AvatarTaskRow): string {
  if (isTerminal(task.state)) {
    return `kie.ai already had this task and it has ended ${task.state}; kie.ai has no cancel, and what it billed for the render stands`;
  }
  const how =
    task.submitStatus === 'in_flight'
      ? 'This task is being sent to kie.ai right now'
      : task.submitStatus === 'unknown'
        ? 'kie.ai may already have this task (its answer to the submit was lost)'
        : 'kie.ai already has this task';
  return `${how}; kie.ai has no cancel, so its render and its billing go on`;
}

function toCreateError(error: KieError): Error {
  if (error.kind === 'insufficient_credits') return new InsufficientCreditsError(error.message);
  if (error.kind === 'retryable') return new UpstreamUnavailableError(error.message);
  return new UpstreamRejectedError(error.message);
}
