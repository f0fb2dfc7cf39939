import type postgres from 'postgres';
import {
  type AvatarTaskEventSource,
  type AvatarTaskState,
  isForward,
  isTerminal,
  targetFromSnapshot,
  type UpstreamSnapshot,
} from '../../src/tasks/states.js';

/**
 * The gateway's SQL written by hand with postgres.js: the same statements in the same transactions as
 * src/tasks/repository.ts issues through drizzle, so a baseline differs from the gateway only by the layers
 * above the SQL (GraphQL, the ORM, yoga), not by doing less database work. The pure state machine is shared:
 * it is not a layer, it is the rule.
 */

export interface TaskRow {
  id: string;
  user_id: string;
  state: AvatarTaskState;
  model: 'PRO' | 'STANDARD';
  image_url: string;
  audio_url: string;
  prompt: string | null;
  upstream_task_id: string | null;
  callback_secret: string;
  result_urls: string[];
  failure_code: string | null;
  failure_message: string | null;
  version: number;
  created_at: Date;
  updated_at: Date;
  completed_at: Date | null;
}

// Its own channel, so a gateway running next to a baseline never hears the baseline's signals.
export const TASK_CHANNEL = 'avatar_task_updated_baseline';

export class UpstreamMismatchError extends Error {}

export class TaskSql {
  constructor(readonly sql: postgres.Sql) {}

  async findById(id: string): Promise<TaskRow | undefined> {
    const [row] = await this.sql<TaskRow[]>`select * from avatar_tasks where id = ${id}`;
    return row;
  }

  async findForUser(userId: string, id: string): Promise<TaskRow | undefined> {
    const [row] = await this.sql<
      TaskRow[]
    >`select * from avatar_tasks where id = ${id} and user_id = ${userId}`;
    return row;
  }

  /**
   * A page of a user's tasks changed after `since` (or at `since`, after `afterId`), oldest change first: the
   * repository's `listUpdatedSince`, which a `since` replay reads page by page.
   */
  async listUpdatedSince(userId: string, since: Date, afterId: string | undefined, limit: number) {
    return afterId === undefined
      ? this.sql<TaskRow[]>`
          select * from avatar_tasks where user_id = ${userId} and updated_at > ${since}
          order by updated_at, id limit ${limit}`
      : this.sql<TaskRow[]>`
          select * from avatar_tasks
          where user_id = ${userId} and (updated_at > ${since} or (updated_at = ${since} and id > ${afterId}))
          order by updated_at, id limit ${limit}`;
  }

  /** createAvatarTask's first transaction: the PENDING row and its first event. */
  async insertPending(task: {
    id: string;
    userId: string;
    imageUrl: string;
    audioUrl: string;
    prompt: string | null;
    inputHash: string;
    callbackSecret: string;
    nextCheckAt: Date;
    now: Date;
  }): Promise<TaskRow | undefined> {
    return this.sql.begin(async (tx) => {
      const [row] = await tx<TaskRow[]>`
        insert into avatar_tasks (id, user_id, state, model, image_url, audio_url, prompt, idempotency_key,
          input_hash, callback_secret, version, submit_status, next_check_at, created_at, updated_at)
        values (${task.id}, ${task.userId}, 'PENDING', 'PRO', ${task.imageUrl}, ${task.audioUrl}, ${task.prompt},
          null, ${task.inputHash}, ${task.callbackSecret}, 1, 'queued', ${task.nextCheckAt}, ${task.now}, ${task.now})
        on conflict do nothing
        returning *`;
      if (!row) return undefined;
      await tx`
        insert into avatar_task_events (task_id, version, state, source, at, message)
        values (${row.id}, 1, 'PENDING', 'MUTATION', ${task.now}, null)`;
      return row;
    });
  }

  /** The single conditional UPDATE that takes the right to send a task to kie. */
  async claimSubmit(id: string, leaseMs: number): Promise<TaskRow | undefined> {
    const leaseUntil = new Date(Date.now() + leaseMs);
    const [row] = await this.sql<TaskRow[]>`
      update avatar_tasks
      set submit_status = 'in_flight', submit_attempts = submit_attempts + 1, lease_until = ${leaseUntil},
        next_check_at = ${leaseUntil}
      where id = ${id} and state = 'PENDING' and submit_status = 'queued'
      returning *`;
    return row;
  }

  /**
   * The one place a task changes, as the repository's `transition`: when the target is forward, one statement
   * writes it, bumps the version and appends one event, only if the row still has the version decided on;
   * otherwise the row is read again and decided again.
   */
  async transition(
    task: TaskRow | string,
    source: AvatarTaskEventSource,
    decide: (task: TaskRow) => {
      target: ReturnType<typeof targetFromSnapshot>;
      patch?: Record<string, unknown>;
    },
  ): Promise<{ row: TaskRow; changed: boolean } | undefined> {
    let current = typeof task === 'string' ? await this.findById(task) : task;
    for (let attempt = 1; current; attempt++) {
      const { target, patch = {} } = decide(current);
      if (!isForward(current.state, target.state)) return { row: current, changed: false };
      const now = new Date();
      const version = current.version + 1;
      const values: Record<string, unknown> = { ...patch, state: target.state, version, updated_at: now };
      if (target.resultUrls) values.result_urls = target.resultUrls;
      if (target.failure) {
        values.failure_code = target.failure.code;
        values.failure_message = target.failure.message;
      }
      if (isTerminal(target.state))
        Object.assign(values, { completed_at: now, next_check_at: null, lease_until: null });
      // As the repository: no columns returned, the row read plus what was written is the new row.
      const written = target.resultUrls
        ? { ...values, result_urls: this.sql.json(target.resultUrls) }
        : values;
      const [event] = await this.sql`
        with changed as (
          update avatar_tasks set ${this.sql(written)}
          where id = ${current.id} and version = ${current.version}
          returning id)
        insert into avatar_task_events (task_id, version, state, source, at, message)
        select id, ${version}::integer, ${target.state}::text, ${source}::text, ${now}::timestamptz,
          ${target.message ?? null}::text
        from changed
        returning version`;
      if (event) return { row: { ...current, ...values } as TaskRow, changed: true };
      if (attempt === 8) throw new Error(`task ${current.id} kept changing`);
      current = await this.findById(current.id);
    }
    return undefined;
  }

  /** What kie says, applied as the gateway's `applyUpstream` does. */
  applySnapshot(task: TaskRow, snapshot: UpstreamSnapshot) {
    return this.transition(task, 'CALLBACK', (task) => {
      if (task.upstream_task_id && task.upstream_task_id !== snapshot.upstreamTaskId) {
        throw new UpstreamMismatchError();
      }
      return { target: targetFromSnapshot(snapshot) };
    });
  }

  async notify(row: Pick<TaskRow, 'id' | 'user_id' | 'version'>): Promise<void> {
    const payload = JSON.stringify({ taskId: row.id, userId: row.user_id, version: row.version });
    await this.sql`select pg_notify(${TASK_CHANNEL}, ${payload})`;
  }

  /** A user's tasks, newest first, keyset-paginated on (created_at, id): the repository's query. */
  async listForUser(userId: string, first: number, after?: { createdAt: Date; id: string }) {
    const rows = after
      ? await this.sql<TaskRow[]>`
          select * from avatar_tasks
          where user_id = ${userId} and (created_at, id) < (${after.createdAt.toISOString()}::timestamptz, ${after.id}::uuid)
          order by created_at desc nulls last, id desc nulls last
          limit ${first + 1}`
      : await this.sql<TaskRow[]>`
          select * from avatar_tasks where user_id = ${userId}
          order by created_at desc nulls last, id desc nulls last
          limit ${first + 1}`;
    return { rows: rows.slice(0, first), hasNextPage: rows.length > first };
  }
}
