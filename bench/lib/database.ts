import { randomBytes, randomUUID } from 'node:crypto';
import { encodeGlobalID } from '@pothos/plugin-relay';
import postgres from 'postgres';
import { openDatabase } from '../../src/db/connection.js';
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
      }
      await sql`analyze avatar_tasks`;
      await sql`analyze avatar_task_events`;
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
