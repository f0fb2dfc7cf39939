import { type AnyColumn, sql } from 'drizzle-orm';
import {
  bigint,
  doublePrecision,
  index,
  integer,
  jsonb,
  pgTable,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from 'drizzle-orm/pg-core';
import type { TaskFailureCode } from '../tasks/errors.js';
import { avatarTaskEventSources, avatarTaskStates } from '../tasks/states.js';

// Millisecond precision: JavaScript dates carry milliseconds, and keyset cursors and `since` compare
// timestamps that have made a round trip through a Date.
const at = (name: string) => timestamp(name, { withTimezone: true, precision: 3, mode: 'date' });

/**
 * Whether kie has the task: how far the single, paid createTask call got. `canceled`: its owner canceled it
 * while it was still `queued`, so it is never sent.
 */
export const submitStatuses = ['queued', 'in_flight', 'unknown', 'accepted', 'refused', 'canceled'] as const;
export type SubmitStatus = (typeof submitStatuses)[number];

/** The predicate of the partial indexes over unfinished tasks; queries say the same to be served by them. */
const unfinished = (state: AnyColumn) => sql`${state} not in ('SUCCEEDED', 'FAILED', 'CANCELED')`;

export const avatarTasks = pgTable(
  'avatar_tasks',
  {
    id: uuid('id').primaryKey(),
    userId: text('user_id').notNull(),
    state: text('state', { enum: avatarTaskStates }).notNull(),
    model: text('model', { enum: ['PRO', 'STANDARD'] }).notNull(),
    imageUrl: text('image_url').notNull(),
    audioUrl: text('audio_url').notNull(),
    prompt: text('prompt'),
    /** kie's price per second for the model times the audio's duration, known before submit; null if unknown. */
    estimatedCredits: doublePrecision('estimated_credits'),
    idempotencyKey: text('idempotency_key'),
    /** sha256 of the normalised input, to tell a retried create from a reused key. */
    inputHash: text('input_hash').notNull(),
    /** Random, URL-safe, 192 bits; part of the callback URL, so kie's callback proves which task it is for. */
    callbackSecret: text('callback_secret').notNull(),
    upstreamTaskId: text('upstream_task_id'),
    resultUrls: jsonb('result_urls').$type<string[]>().notNull().default([]),
    failureCode: text('failure_code').$type<TaskFailureCode>(),
    failureMessage: text('failure_message'),
    /** kie's `consumeCredits` for the task, once kie reported it; null until then. */
    creditsCharged: doublePrecision('credits_charged'),
    version: integer('version').notNull().default(1),
    submitStatus: text('submit_status', { enum: submitStatuses }).notNull().default('queued'),
    submitAttempts: integer('submit_attempts').notNull().default(0),
    submittedAt: at('submitted_at'),
    /** When the submit loop or the poller should next look at this task; null when nothing is due. */
    nextCheckAt: at('next_check_at'),
    pollAttempts: integer('poll_attempts').notNull().default(0),
    /** A poller or submitter instance holds the task until then, so two instances never work one task at once. */
    leaseUntil: at('lease_until'),
    /**
     * Someone is looking: a live subscriber on some instance holds the task watched until then, renewing it
     * while the stream is open, so every instance's poller knows to check it sooner.
     */
    watchedUntil: at('watched_until'),
    createdAt: at('created_at').notNull(),
    updatedAt: at('updated_at').notNull(),
    completedAt: at('completed_at'),
  },
  (t) => [
    // "A user's tasks, newest first", keyset-paginated by (created_at, id).
    index('avatar_tasks_user_created_idx').on(t.userId, t.createdAt.desc(), t.id.desc()),
    // `avatarTaskUpdated(since:)` replays a user's tasks by update time.
    index('avatar_tasks_user_updated_idx').on(t.userId, t.updatedAt),
    // "Tasks due for the poller or the submit loop": only unfinished tasks are in this partial index.
    index('avatar_tasks_due_idx').on(t.nextCheckAt).where(unfinished(t.state)),
    // "Watched tasks due": few at a time, claimed before the others.
    index('avatar_tasks_watched_idx')
      .on(t.watchedUntil)
      .where(sql`${unfinished(t.state)} and ${t.watchedUntil} is not null`),
    uniqueIndex('avatar_tasks_user_idempotency_key_idx')
      .on(t.userId, t.idempotencyKey)
      .where(sql`${t.idempotencyKey} is not null`),
    uniqueIndex('avatar_tasks_upstream_task_id_idx').on(t.upstreamTaskId),
    // The per-user cap on unfinished tasks counts these.
    index('avatar_tasks_user_active_idx').on(t.userId).where(unfinished(t.state)),
    // The fair queue: tasks still to send to kie, each user's in creation order.
    index('avatar_tasks_submit_queue_idx')
      .on(t.userId, t.createdAt, t.id)
      .where(sql`${t.state} = 'PENDING' and ${t.submitStatus} = 'queued'`),
  ],
);

/**
 * The creates sent to kie in its last window, shared by every instance on the database: kie's limit is per
 * account, so one window for all of them is what keeps kie from refusing (or counting against) any.
 */
export const kieCreateSlots = pgTable(
  'kie_create_slots',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    /** Whose task took the slot: the fair queue serves first whoever had the fewest slots lately. */
    userId: text('user_id').notNull(),
    takenAt: at('taken_at').notNull(),
  },
  (t) => [
    index('kie_create_slots_taken_at_idx').on(t.takenAt),
    // The fair queue's claim reads the slots of the users it may serve, not every slot (drizzle/0009_*).
    index('kie_create_slots_user_taken_at_idx').on(t.userId, t.takenAt),
  ],
);

/**
 * Callback signatures already accepted, kept until their timestamp leaves the accepted window: kie's
 * signature covers the task id and the timestamp, not the body, so a second use of one is a replay.
 */
export const seenCallbackSignatures = pgTable(
  'seen_callback_signatures',
  {
    /** sha256 of the signature header, so the table holds nothing a sender could reuse. */
    signatureHash: text('signature_hash').primaryKey(),
    expiresAt: at('expires_at').notNull(),
  },
  (t) => [index('seen_callback_signatures_expires_at_idx').on(t.expiresAt)],
);

export const avatarTaskEvents = pgTable(
  'avatar_task_events',
  {
    taskId: uuid('task_id')
      .notNull()
      .references(() => avatarTasks.id, { onDelete: 'cascade' }),
    version: integer('version').notNull(),
    state: text('state', { enum: avatarTaskStates }).notNull(),
    source: text('source', { enum: avatarTaskEventSources }).notNull(),
    message: text('message'),
    at: at('at').notNull(),
  },
  // One event per version: a second writer of the same version fails instead of forking the history.
  (t) => [uniqueIndex('avatar_task_events_task_version_idx').on(t.taskId, t.version)],
);

/** Where a result video's copy stands: being copied (due at next_attempt_at), stored, given up, or removed. */
export const storedResultStatuses = ['copying', 'stored', 'failed', 'removed'] as const;
export type StoredResultStatus = (typeof storedResultStatuses)[number];

/**
 * The gateway's own copy of each result video, one row per result URL of a SUCCEEDED task. The row is
 * written by the same statement that makes the task SUCCEEDED, so the copy is a durable job: whichever
 * instance leases it copies it, and one that dies mid-copy leaves it to be taken over after its lease.
 */
export const storedResults = pgTable(
  'stored_results',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    taskId: uuid('task_id')
      .notNull()
      .references(() => avatarTasks.id, { onDelete: 'cascade' }),
    /** The result's index in the task's resultUrls. */
    position: integer('position').notNull(),
    /** kie's URL for it, as kie reported it. */
    sourceUrl: text('source_url').notNull(),
    status: text('status', { enum: storedResultStatuses }).notNull().default('copying'),
    /** Where the copy is, in the folder or the bucket (set once stored). */
    storageKey: text('storage_key'),
    contentType: text('content_type'),
    sizeBytes: bigint('size_bytes', { mode: 'number' }),
    sha256: text('sha256'),
    /** Read from the file's header; null when it could not be read. */
    durationSeconds: doublePrecision('duration_seconds'),
    attempts: integer('attempts').notNull().default(0),
    /** When the next copy attempt is due; null when none is. */
    nextAttemptAt: at('next_attempt_at'),
    /** An instance copying it holds it until then. */
    leaseUntil: at('lease_until'),
    lastError: text('last_error'),
    storedAt: at('stored_at'),
    /** Past it (RESULT_RETENTION_S after it was stored) the copy is deleted. */
    expiresAt: at('expires_at'),
  },
  (t) => [
    uniqueIndex('stored_results_task_position_idx').on(t.taskId, t.position),
    index('stored_results_due_idx').on(t.nextAttemptAt).where(sql`${t.status} = 'copying'`),
    index('stored_results_expires_idx').on(t.expiresAt).where(sql`${t.status} = 'stored'`),
  ],
);

export type StoredResultRow = typeof storedResults.$inferSelect;
export type AvatarTaskRow = typeof avatarTasks.$inferSelect;
export type AvatarTaskEventRow = typeof avatarTaskEvents.$inferSelect;
