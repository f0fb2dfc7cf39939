import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { encodeGlobalID } from '@pothos/plugin-relay';
import postgres from 'postgres';
import { openDatabase } from '../../src/db/connection.js';
import { resultKey } from '../../src/storage/result-store.js';
import type { AvatarTaskState } from '../../src/tasks/states.js';

/**
 * The bench's own database on the local Postgres, created through an admin connection to BENCH_DATABASE_URL,
 * migrated with the gateway's migrations, emptied between scenarios and dropped at the end. Each run gets its
 * own (`avatar_gateway_bench_<pid>`): a CI smoke run and a developer's run on one machine must not empty each
 * other's tables.
 */

export const DEFAULT_ADMIN_URL = 'postgres://postgres@127.0.0.1:5432/test';
const DATABASE_NAME = `avatar_gateway_bench_${process.pid}`;

export interface SeedTask {
  id: string;
  globalId: string;
  userId: string;
  state: AvatarTaskState;
  version: number;
  upstreamTaskId: string;
  callbackSecret: string;
  createdAt: Date;
  /**
   * For a SUCCEEDED task: the stored_results row the result copier would have left, in its own shape
   * (src/storage/copier.ts): `stored` (copied a minute after the task succeeded, kept RESULT_RETENTION_S) or
   * `failed` (given up after its attempts, so reads fall back to kie's link). Unset: no row, as with
   * RESULT_STORAGE=none.
   */
  copy?: 'stored' | 'failed';
}

export interface BenchDatabase {
  url: string;
  sql: postgres.Sql;
  truncate(): Promise<void>;
  /** Inserts finished-looking rows straight into the tables, with one event per version. */
  seed(tasks: readonly SeedTask[]): Promise<void>;
  close(): Promise<void>;
}

export class DatabaseUnavailableError extends Error {
  override name = 'DatabaseUnavailableError';
}

export async function prepareDatabase(adminUrl = process.env.BENCH_DATABASE_URL ?? DEFAULT_ADMIN_URL) {
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {}, connect_timeout: 5 });
  try {
    await admin.unsafe(`drop database if exists ${DATABASE_NAME} with (force)`);
    await admin.unsafe(`create database ${DATABASE_NAME}`);
  } catch (error) {
    await admin.end({ timeout: 5 });
    throw new DatabaseUnavailableError(
      `Postgres at ${redact(adminUrl)} is not usable: ${(error as Error).message}`,
    );
  }
  const url = new URL(adminUrl);
  url.pathname = `/${DATABASE_NAME}`;
  const handle = await openDatabase({ url: url.toString(), poolSize: 2 });
  await handle.migrate();
  await handle.close();

  const sql = postgres(url.toString(), { max: 4, onnotice: () => {} });
  const database: BenchDatabase = {
    url: url.toString(),
    sql,
    async truncate() {
      // Cascade: every table that refers to a task (stored results, ...) is emptied with it.
      await sql`truncate avatar_task_events, avatar_tasks cascade`;
    },
    async seed(tasks) {
      for (let start = 0; start < tasks.length; start += 1000) {
        const batch = tasks.slice(start, start + 1000);
        await sql`insert into avatar_tasks ${sql(batch.map((task) => taskRow(sql, task)))}`;
        await sql`insert into avatar_task_events ${sql(batch.flatMap(eventRows))}`;
        const copies = batch.flatMap(storedResultRows);
        if (copies.length > 0) await sql`insert into stored_results ${sql(copies)}`;
      }
      await sql`analyze avatar_tasks`;
      await sql`analyze avatar_task_events`;
      await sql`analyze stored_results`;
    },
    async close() {
      await sql.end({ timeout: 5 });
      await admin.unsafe(`drop database if exists ${DATABASE_NAME} with (force)`).catch(() => {});
      await admin.end({ timeout: 5 });
    },
  };
  return database;
}

function redact(url: string): string {
  const parsed = new URL(url);
  if (parsed.password) parsed.password = '***';
  return parsed.toString();
}

const walk: AvatarTaskState[] = ['PENDING', 'WAITING', 'QUEUING', 'GENERATING'];
const isTerminal = (state: AvatarTaskState) => state === 'SUCCEEDED' || state === 'FAILED';

/**
 * The gateway's environment for scenarios whose tasks succeed with these placeholder results: files.example.com
 * does not exist, so with a result store the gateway would spend the run retrying a download of every result
 * (a DNS lookup, an error, a log line and a database write per attempt, their garbage promoted into major
 * collections) on a host that is not on this machine, which no baseline does and no scenario measures. Reading
 * stored results on every delivery stays as it is.
 */
export const NO_RESULT_COPIES = { RESULT_STORAGE: 'none' } as const;

export function resultUrl(upstreamTaskId: string): string {
  return `https://files.example.com/results/${upstreamTaskId}.mp4`;
}

function taskRow(sql: postgres.Sql, task: SeedTask) {
  const terminal = isTerminal(task.state);
  return {
    id: task.id,
    user_id: task.userId,
    state: task.state,
    model: 'PRO',
    image_url: 'https://example.com/face.png',
    audio_url: 'https://example.com/voice.mp3',
    prompt: null,
    idempotency_key: null,
    input_hash: 'bench',
    callback_secret: task.callbackSecret,
    upstream_task_id: task.upstreamTaskId,
    result_urls: sql.json(task.state === 'SUCCEEDED' ? [resultUrl(task.upstreamTaskId)] : []),
    failure_code: task.state === 'FAILED' ? 'GENERATION_FAILED' : null,
    failure_message: task.state === 'FAILED' ? 'Simulated generation failure' : null,
    version: task.version,
    submit_status: 'accepted',
    submit_attempts: 1,
    submitted_at: task.createdAt,
    // Nothing is due: the poller leaves seeded tasks alone unless a scenario says otherwise.
    next_check_at: null,
    poll_attempts: 0,
    lease_until: null,
    created_at: task.createdAt,
    updated_at: task.createdAt,
    completed_at: terminal ? task.createdAt : null,
  };
}

/** The copier stores a result about this long after its task SUCCEEDED. */
const COPIED_AFTER_MS = 60_000;
/** RESULT_RETENTION_S's default: a stored copy is kept 30 days. */
const RETENTION_MS = 30 * 86_400_000;
const COPY_ATTEMPTS = 20;

interface StoredResultSeedRow {
  task_id: string;
  position: number;
  source_url: string;
  status: 'stored' | 'failed';
  storage_key: string | null;
  content_type: string | null;
  size_bytes: number | null;
  sha256: string | null;
  duration_seconds: number | null;
  attempts: number;
  last_error: string | null;
  next_attempt_at: null;
  lease_until: null;
  stored_at: Date | null;
  expires_at: Date | null;
}

/** What markStored or the last markAttemptFailed leaves in stored_results for the task's one result. */
function storedResultRows(task: SeedTask): StoredResultSeedRow[] {
  if (task.state !== 'SUCCEEDED' || !task.copy) return [];
  const common = {
    task_id: task.id,
    position: 0,
    source_url: resultUrl(task.upstreamTaskId),
    next_attempt_at: null,
    lease_until: null,
  };
  if (task.copy === 'failed') {
    return [
      {
        ...common,
        status: 'failed',
        storage_key: null,
        content_type: null,
        size_bytes: null,
        sha256: null,
        duration_seconds: null,
        attempts: COPY_ATTEMPTS,
        last_error: 'download failed: HTTP 404',
        stored_at: null,
        expires_at: null,
      },
    ];
  }
  const storedAt = new Date(task.createdAt.getTime() + COPIED_AFTER_MS);
  return [
    {
      ...common,
      status: 'stored',
      storage_key: resultKey(task.id, 0),
      content_type: 'video/mp4',
      size_bytes: 4_200_000,
      sha256: createHash('sha256').update(task.id).digest('hex'),
      duration_seconds: 12.5,
      attempts: 0,
      last_error: null,
      stored_at: storedAt,
      expires_at: new Date(storedAt.getTime() + RETENTION_MS),
    },
  ];
}

function eventRows(task: SeedTask) {
  return Array.from({ length: task.version }, (_, index) => ({
    task_id: task.id,
    version: index + 1,
    state: index + 1 === task.version ? task.state : (walk[index] ?? 'GENERATING'),
    source: index === 0 ? 'MUTATION' : 'CALLBACK',
    message: null,
    at: task.createdAt,
  }));
}

/** Tasks kie has accepted (WAITING, version 2), as the live scenarios start from. */
export function waitingTask(userId: string, index: number, createdAt = new Date()): SeedTask {
  const id = randomUUID();
  return {
    id,
    globalId: encodeGlobalID('AvatarTask', id),
    userId,
    state: 'WAITING',
    version: 2,
    upstreamTaskId: `bench_${index}_${randomBytes(4).toString('hex')}`,
    callbackSecret: randomBytes(24).toString('base64url'),
    createdAt,
  };
}
