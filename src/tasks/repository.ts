import {
  and,
  asc,
  eq,
  gt,
  inArray,
  isNotNull,
  isNull,
  lte,
  ne,
  notInArray,
  or,
  type SQL,
  sql,
} from 'drizzle-orm';
import type { Database } from '../db/connection.js';
import { type PreparedSql, prepareSql } from '../db/prepared-sql.js';
import {
  type AvatarTaskEventRow,
  type AvatarTaskRow,
  avatarTaskEvents,
  avatarTasks,
  kieCreateSlots,
  seenCallbackSignatures,
} from '../db/schema.js';
import { withPreloadedStoredResults } from '../storage/preloaded-results.js';
import { storedResultsOfTask } from '../storage/repository.js';
import type { QuotaName } from './errors.js';
import {
  type AvatarTaskEventSource,
  type AvatarTaskState,
  isForward,
  isTerminal,
  type TaskTarget,
  terminalStates,
} from './states.js';
import { TransitionStatements } from './transition-statements.js';

export type NewTask = Omit<
  typeof avatarTasks.$inferInsert,
  'version' | 'state' | 'createdAt' | 'updatedAt' | 'submitStatus'
>;

/** What a create gives a new task; everything else starts at its default. */
export type CreatedTask = Pick<
  AvatarTaskRow,
  | 'id'
  | 'userId'
  | 'model'
  | 'imageUrl'
  | 'audioUrl'
  | 'prompt'
  | 'estimatedCredits'
  | 'idempotencyKey'
  | 'inputHash'
  | 'callbackSecret'
> & { nextCheckAt: Date };

/** Columns a change may set besides the state; they never bump the version on their own. */
export type TaskPatch = Partial<
  Pick<
    AvatarTaskRow,
    | 'upstreamTaskId'
    | 'submitStatus'
    | 'submittedAt'
    | 'nextCheckAt'
    | 'pollAttempts'
    | 'leaseUntil'
    | 'submitAttempts'
    | 'creditsCharged'
  >
>;

export interface TaskDecision {
  target?: TaskTarget | undefined;
  patch?: TaskPatch | undefined;
}

export interface TransitionResult {
  task: AvatarTaskRow;
  /** The state changed (and so the version did). */
  changed: boolean;
}

export interface TaskPage {
  tasks: AvatarTaskRow[];
  hasNextPage: boolean;
}

/** What a user may have: unfinished tasks at once, and tasks created in any hour. */
export interface UserQuota {
  maxActiveTasks: number;
  maxCreatesPerHour: number;
}

export type QuotaInsertOutcome =
  | { kind: 'inserted'; task: AvatarTaskRow }
  /** The user's idempotency key already names a task; nothing was inserted or counted. */
  | { kind: 'existing'; task: AvatarTaskRow }
  /** MAX_PENDING_SUBMITS tasks already wait for kie: the client must back off. */
  | { kind: 'queue_full'; queued: number }
  /** A cap is full; `resetsAt` is when the hourly one frees a create (unknown for unfinished tasks). */
  | { kind: 'quota'; quota: QuotaName; limit: number; resetsAt: Date | undefined };

/** A queued task this instance may now send, and the slot in kie's window it holds. */
export interface ClaimedSubmit {
  task: AvatarTaskRow;
  slotId: string;
}

/** kie's account limit on creates: at most `maxCreates` sent in any `windowMs`, by all instances together. */
export interface CreateWindow {
  maxCreates: number;
  windowMs: number;
  /** How long a submit claimed from the queue is this instance's to send. */
  leaseMs: number;
}

export interface TaskCursor {
  createdAt: Date;
  id: string;
}

// The advisory locks (one per user for the quotas, one for all for kie's create window) are taken in
// drizzle/0002_create_window_claim.sql and drizzle/0003_create_within_quota.sql.
/** How long who was served is remembered, so a user just served does not win the next tie. */
const FAIRNESS_MEMORY_MS = 600_000;
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export const isTaskId = (id: string) => uuidPattern.test(id);

/**
 * Runs a query as a prepared statement. drizzle otherwise sends every query unnamed, so Postgres parses and
 * plans it on each call; prepared, postgres.js keeps it parsed per connection, which about halves the cost of
 * each query on the hot paths (callbacks, creates, subscriptions, history) for the gateway and the database.
 * postgres.js names statements itself (by their text) and PGlite ignores the name.
 */
function prepared<T>(query: { prepare(name: string): { execute(): Promise<T> } }): Promise<T> {
  return query.prepare('avatar_gateway').execute();
}

/** Tasks one page of a `since` replay reads, unless the caller says. */
const DEFAULT_REPLAY_PAGE = 100;

/** How often a transition re-reads and re-decides a task that others keep changing before it gives up. */
const MAX_TRANSITION_ATTEMPTS = 8;

/** The rows of `db.execute`: postgres.js answers with an array of rows, PGlite with `{ rows }`. */
function rowsOf(result: unknown): unknown[] {
  return Array.isArray(result) ? result : ((result as { rows: unknown[] }).rows ?? []);
}

/** The keys that are set: drizzle skips undefined values in SET, and so must the row rebuilt from them. */
function defined<T extends object>(values: T): Partial<T> {
  return Object.fromEntries(Object.entries(values).filter(([, value]) => value !== undefined)) as Partial<T>;
}

/** A replay's order: oldest change first, then by id (Postgres compares uuids as bytes, as hex text sorts). */
function byUpdateThenId(a: AvatarTaskRow, b: AvatarTaskRow): number {
  return a.updatedAt.getTime() - b.updatedAt.getTime() || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/** listUpdatedSince's condition: changed after `since`, or at `since` after the task `afterId`. */
function isAfterCursor(task: AvatarTaskRow, since: Date, afterId: string | undefined): boolean {
  const changedAt = task.updatedAt.getTime();
  if (changedAt !== since.getTime()) return changedAt > since.getTime();
  return afterId !== undefined && task.id > afterId;
}

/** The only module that touches the task tables. */
export class TaskRepository {
  // The two lookups every callback and every live update make, built once instead of on each call.
  private readonly byId;
  private readonly byIdForUser;
  private readonly byIdRecordingSignature;
  private readonly transitions: TransitionStatements;
  // The two database functions every create calls, prepared once (db/prepared-sql.ts).
  private readonly insertWithinQuotaCall: PreparedSql;
  private readonly claimCreateSlotsCall: PreparedSql;
  private readonly markWatchedStatement;
  /** listForUser's four statements, by shape (see historyPage). */
  private readonly historyPages: Array<ReturnType<TaskRepository['buildHistoryPage']> | undefined> = [];
  private readonly replayPagesStatement;

  /**
   * `copyResults`: a task that SUCCEEDED gets a row per result in stored_results, written by the same
   * statement, which the result copier picks up (off when RESULT_STORAGE is `none`).
   */
  constructor(
    private readonly db: Database,
    private readonly options: { copyResults: boolean } = { copyResults: false },
  ) {
    this.transitions = new TransitionStatements(db);
    const value = (name: string) => sql.placeholder(name);
    this.insertWithinQuotaCall = prepareSql(
      db,
      sql`select outcome, task_id, queued, quota, quota_limit, resets_at
        from avatar_insert_task_within_quota(${value('id')}::uuid, ${value('userId')}::text,
          ${value('model')}::text, ${value('imageUrl')}::text, ${value('audioUrl')}::text,
          ${value('prompt')}::text, ${value('idempotencyKey')}::text, ${value('inputHash')}::text,
          ${value('callbackSecret')}::text, ${value('nextCheckAt')}::timestamptz, ${value('now')}::timestamptz,
          ${value('maxPendingSubmits')}::integer, ${value('maxActiveTasks')}::integer,
          ${value('maxCreatesPerHour')}::integer, ${value('estimatedCredits')}::double precision)`,
    );
    // One array parameter, however many tasks: built and planned once. Rows a state change holds are skipped
    // (the next renewal marks them), so a renewal never waits on a callback, nor keeps others waiting longer.
    const unfinishedWatched = db
      .select({ id: avatarTasks.id })
      .from(avatarTasks)
      .where(
        and(
          sql`${avatarTasks.id} = any(${value('ids')}::uuid[])`,
          notInArray(avatarTasks.state, terminalStates),
        ),
      )
      .for('update', { skipLocked: true });
    this.markWatchedStatement = db
      .update(avatarTasks)
      .set({
        watchedUntil: sql`${value('until')}::timestamptz`,
        nextCheckAt: sql`case when ${avatarTasks.submitStatus} = 'accepted'
          then least(${avatarTasks.nextCheckAt}, ${value('checkBy')}::timestamptz)
          else ${avatarTasks.nextCheckAt} end`,
      })
      .where(inArray(avatarTasks.id, unfinishedWatched))
      .prepare('avatar_tasks_mark_watched');
    this.claimCreateSlotsCall = prepareSql(
      db,
      sql`select task_id, slot_id, submit_attempts, lease_until
        from avatar_claim_create_slots(${value('maxCreates')}::integer, ${value('windowMs')}::float8,
          ${value('leaseMs')}::float8, ${value('fairnessMemoryMs')}::float8, ${value('only')}::uuid,
          ${value('now')}::timestamptz)`,
    );
    this.byId = db
      .select()
      .from(avatarTasks)
      .where(eq(avatarTasks.id, sql.placeholder('id')))
      .prepare('avatar_task_by_id');
    this.byIdForUser = db
      .select()
      .from(avatarTasks)
      .where(
        and(eq(avatarTasks.id, sql.placeholder('id')), eq(avatarTasks.userId, sql.placeholder('userId'))),
      )
      .prepare('avatar_task_by_id_for_user');
    // Each request of a batch is its own page (the same condition, order and limit as listUpdatedSince),
    // read by a lateral join on the (user_id, updated_at) index; a task on several pages is returned once.
    // Three text arrays (postgres.js and PGlite both send those as they are); '' stands for no `afterId`.
    const replayPages = sql`select page.id
      from unnest(${value('userIds')}::text[], ${value('sinces')}::text[], ${value('afterIds')}::text[])
        as request(user_id, since, after_id)
      cross join lateral (
        select candidate.id from ${avatarTasks} candidate
        where candidate.user_id = request.user_id
          and (candidate.updated_at > request.since::timestamptz
            or (candidate.updated_at = request.since::timestamptz
              and candidate.id > nullif(request.after_id, '')::uuid))
        order by candidate.updated_at, candidate.id
        limit ${value('limit')}::integer
      ) page`;
    this.replayPagesStatement = db
      .select()
      .from(avatarTasks)
      .where(sql`${avatarTasks.id} in (${replayPages})`)
      .prepare('avatar_tasks_replay_pages');
    // Recorded only for a task that exists: one refused for its secret is forgotten by the caller.
    const seen = db.$with('seen', { hash: seenCallbackSignatures.signatureHash }).as(sql`
      insert into ${seenCallbackSignatures} (signature_hash, expires_at)
      select ${sql.placeholder('hash')}::text, ${sql.placeholder('expiresAt')}::timestamptz
      where exists (select 1 from ${avatarTasks} where ${avatarTasks.id} = ${sql.placeholder('id')}::uuid)
      on conflict do nothing
      returning signature_hash`);
    this.byIdRecordingSignature = db
      .with(seen)
      .select({ task: avatarTasks, firstUse: sql<boolean>`exists (select 1 from ${seen})` })
      .from(avatarTasks)
      .where(eq(avatarTasks.id, sql.placeholder('id')))
      .prepare('avatar_task_by_id_recording_signature');
  }

  /**
   * Stores a new PENDING task with its first event. With an idempotency key already used by this user the
   * insert does nothing and returns null, so the caller reads the existing task.
   */
  async insert(task: NewTask, now: Date): Promise<AvatarTaskRow | null> {
    return this.db.transaction((tx) => insertTask(tx, task, now));
  }

  /**
   * Stores a new PENDING task with its first event unless the queue or the user's caps are full, holding the
   * user's advisory lock: two instances creating for one user at once count each other's tasks, so the caps
   * hold across instances. An idempotency key already used returns that task and counts nothing.
   *
   * All of it is one call of `avatar_insert_task_within_quota` (drizzle/0008_estimated_credits.sql), so the
   * lock is held for the database's own work, not across round trips. The row is the one the call inserted:
   * what the task was given, and the columns' defaults.
   */
  async insertWithinQuota(
    task: CreatedTask,
    now: Date,
    limits: UserQuota & { maxPendingSubmits: number },
  ): Promise<QuotaInsertOutcome> {
    const [outcome] = rowsOf(
      await this.insertWithinQuotaCall.execute({
        id: task.id,
        userId: task.userId,
        model: task.model,
        imageUrl: task.imageUrl,
        audioUrl: task.audioUrl,
        prompt: task.prompt,
        idempotencyKey: task.idempotencyKey,
        inputHash: task.inputHash,
        callbackSecret: task.callbackSecret,
        nextCheckAt: task.nextCheckAt.toISOString(),
        now: now.toISOString(),
        maxPendingSubmits: limits.maxPendingSubmits,
        maxActiveTasks: limits.maxActiveTasks,
        maxCreatesPerHour: limits.maxCreatesPerHour,
        estimatedCredits: task.estimatedCredits,
      }),
    ) as Array<{
      outcome: 'inserted' | 'existing' | 'queue_full' | 'quota';
      task_id: string | null;
      queued: number | null;
      quota: QuotaName | null;
      quota_limit: number | null;
      resets_at: string | Date | null;
    }>;
    switch (outcome?.outcome) {
      case 'inserted':
        return { kind: 'inserted', task: newRow(task, now) };
      case 'existing': {
        const existing = await this.findById(outcome.task_id ?? '');
        if (!existing) throw new Error('an idempotency key names a task that cannot be read');
        return { kind: 'existing', task: existing };
      }
      case 'queue_full':
        return { kind: 'queue_full', queued: outcome.queued ?? 0 };
      case 'quota':
        return {
          kind: 'quota',
          quota: outcome.quota ?? 'ACTIVE_TASKS',
          limit: outcome.quota_limit ?? 0,
          resetsAt: outcome.resets_at === null ? undefined : new Date(outcome.resets_at),
        };
      default:
        throw new Error(`inserting a task gave no outcome: ${JSON.stringify(outcome)}`);
    }
  }

  async findById(id: string): Promise<AvatarTaskRow | undefined> {
    if (!isTaskId(id)) return undefined;
    const [row] = await this.byId.execute({ id });
    return row;
  }

  /**
   * A callback's task, read by the same statement that records the callback's signature (its hash, kept until
   * `expiresAt`): `firstUse` is false when it was recorded before, i.e. for a replay. For a task that does not
   * exist nothing is recorded.
   */
  async findRecordingSignature(
    id: string,
    signature: { hash: string; expiresAt: Date },
  ): Promise<{ task: AvatarTaskRow | undefined; firstUse: boolean }> {
    if (!isTaskId(id)) return { task: undefined, firstUse: false };
    // A raw placeholder has no column to encode a Date with: postgres.js takes the ISO text.
    const [row] = await this.byIdRecordingSignature.execute({
      id,
      hash: signature.hash,
      expiresAt: signature.expiresAt.toISOString(),
    });
    return { task: row?.task, firstUse: row?.firstUse ?? false };
  }

  /** A task as its owner sees it: another user's id is indistinguishable from one that does not exist. */
  async findForUser(userId: string, id: string): Promise<AvatarTaskRow | undefined> {
    if (!isTaskId(id)) return undefined;
    const [row] = await this.byIdForUser.execute({ id, userId });
    return row;
  }

  async findByIdempotencyKey(userId: string, key: string): Promise<AvatarTaskRow | undefined> {
    const [row] = await this.db
      .select()
      .from(avatarTasks)
      .where(and(eq(avatarTasks.userId, userId), eq(avatarTasks.idempotencyKey, key)));
    return row;
  }

  /**
   * A user's tasks, newest first, keyset-paginated on (created_at, id). Written so that Postgres walks
   * `avatar_tasks_user_created_idx` from the cursor and reads one page: the order says NULLS LAST as the index
   * does (a plain DESC means NULLS FIRST, which the index cannot serve, so every row of the user was sorted),
   * and the cursor is a row comparison, which bounds the index scan instead of filtering rows after it.
   */
  async listForUser(
    userId: string,
    options: { first: number; after?: TaskCursor | undefined; states?: AvatarTaskState[] | undefined },
  ): Promise<TaskPage> {
    const { after, states } = options;
    const filtered = states !== undefined && states.length > 0;
    const rows = await this.historyPage(after !== undefined, filtered).execute({
      userId,
      states: filtered ? states : undefined,
      afterCreatedAt: after?.createdAt.toISOString(),
      afterId: after?.id,
      limit: options.first + 1,
    });
    const tasks = rows
      .slice(0, options.first)
      .map(({ task, storedCopies }) => withPreloadedStoredResults(task, storedCopies ?? []));
    return { tasks, hasNextPage: rows.length > options.first };
  }

  /** The history page's statement for a page with or without a cursor and a state filter, built once each. */
  private historyPage(withCursor: boolean, withStates: boolean) {
    const shape = (withCursor ? 2 : 0) + (withStates ? 1 : 0);
    const statement = this.historyPages[shape] ?? this.buildHistoryPage(withCursor, withStates);
    this.historyPages[shape] = statement;
    return statement;
  }

  /**
   * drizzle building this on every request was a few percent of a history page's CPU. Each task comes with
   * its stored copies, for its result URLs: in the same statement, and so from the same snapshot.
   */
  private buildHistoryPage(withCursor: boolean, withStates: boolean) {
    const value = (name: string) => sql.placeholder(name);
    return this.db
      .select({ task: avatarTasks, storedCopies: storedResultsOfTask(avatarTasks.id) })
      .from(avatarTasks)
      .where(
        and(
          eq(avatarTasks.userId, value('userId')),
          withStates ? sql`${avatarTasks.state} = any(${value('states')}::text[])` : undefined,
          // A row comparison, which bounds the scan of avatar_tasks_user_created_idx (see bench/README.md).
          withCursor
            ? sql`(${avatarTasks.createdAt}, ${avatarTasks.id}) < (${value('afterCreatedAt')}::timestamptz, ${value('afterId')}::uuid)`
            : undefined,
        ),
      )
      .orderBy(sql`${avatarTasks.createdAt} desc nulls last`, sql`${avatarTasks.id} desc nulls last`)
      .limit(value('limit'))
      .prepare('avatar_tasks_history_page');
  }

  /**
   * A page of a user's tasks changed after `since`, oldest change first: at most `limit` of them, after the
   * task `afterId` changed at exactly `since` when given (the last of the previous page), so that a replay of
   * thousands of tasks is read a page at a time.
   */
  async listUpdatedSince(
    userId: string,
    since: Date,
    page: { afterId?: string | undefined; limit: number } = { limit: DEFAULT_REPLAY_PAGE },
  ): Promise<AvatarTaskRow[]> {
    // One page of the batched read: the replay's condition and order are written once, there.
    const [tasks = []] = await this.listUpdatedSinceForMany(
      [{ userId, since, afterId: page.afterId }],
      page.limit,
    );
    return tasks;
  }

  /**
   * Several pages of `listUpdatedSince` in one query, each `limit` long: the page of each request, in the
   * order of the requests. Many streams replaying at once (clients reconnecting after a restart) share one
   * round trip instead of one query each.
   */
  async listUpdatedSinceForMany(
    requests: ReadonlyArray<{ userId: string; since: Date; afterId: string | undefined }>,
    limit: number,
  ): Promise<AvatarTaskRow[][]> {
    if (requests.length === 0) return [];
    const rows = await this.replayPagesStatement.execute({
      userIds: requests.map((request) => request.userId),
      sinces: requests.map((request) => request.since.toISOString()),
      afterIds: requests.map((request) => request.afterId ?? ''),
      limit,
    });
    const byUser = new Map<string, AvatarTaskRow[]>();
    for (const row of rows) {
      const tasks = byUser.get(row.userId);
      if (tasks) tasks.push(row);
      else byUser.set(row.userId, [row]);
    }
    for (const tasks of byUser.values()) tasks.sort(byUpdateThenId);
    // The rows of a user are the union of the pages of that user's requests: each request's own page is its
    // first `limit` rows after its cursor.
    return requests.map(({ userId, since, afterId }) => {
      const page: AvatarTaskRow[] = [];
      for (const task of byUser.get(userId) ?? []) {
        if (page.length === limit) break;
        if (isAfterCursor(task, since, afterId)) page.push(task);
      }
      return page;
    });
  }

  async listEvents(taskId: string): Promise<AvatarTaskEventRow[]> {
    return this.db
      .select()
      .from(avatarTaskEvents)
      .where(eq(avatarTaskEvents.taskId, taskId))
      .orderBy(asc(avatarTaskEvents.version));
  }

  async listEventsForTasks(taskIds: readonly string[]): Promise<AvatarTaskEventRow[]> {
    if (taskIds.length === 0) return [];
    return this.db
      .select()
      .from(avatarTaskEvents)
      .where(inArray(avatarTaskEvents.taskId, [...taskIds]))
      .orderBy(asc(avatarTaskEvents.taskId), asc(avatarTaskEvents.version));
  }

  /**
   * The single place a task changes. `decide` looks at the row; when its target state is forward, the new
   * state, the bumped version and one event are written by one statement, and only if the row still has the
   * version and the submit status `decide` saw. Otherwise the row is read again and decided again. No lock is
   * held across a round trip: a callback costs one write, where a locking transaction took five round trips
   * and held a pooled connection through all of them, and under load that queueing was most of a callback's
   * latency.
   * `task` is the row when the caller has just read it (a callback has, to check its secret), or its id.
   */
  async transition(
    task: AvatarTaskRow | string,
    source: AvatarTaskEventSource,
    decide: (task: AvatarTaskRow) => TaskDecision | null,
    now: Date = new Date(),
  ): Promise<TransitionResult | null> {
    const id = typeof task === 'string' ? task : task.id;
    let current = typeof task === 'string' ? await this.findById(id) : task;
    for (let attempt = 1; current; attempt++) {
      const outcome = await this.tryTransition(current, source, decide(current), now);
      if (outcome) return outcome;
      if (attempt === MAX_TRANSITION_ATTEMPTS) {
        throw new Error(`task ${id} kept changing under ${attempt} attempts to write it; try again later`);
      }
      current = await this.findById(id);
    }
    return null;
  }

  /** The write `decision` asks for, if `task` is still the current row; null when someone changed it first. */
  private async tryTransition(
    task: AvatarTaskRow,
    source: AvatarTaskEventSource,
    decision: TaskDecision | null,
    now: Date,
  ): Promise<TransitionResult | null> {
    if (!decision) return { task, changed: false };
    const target =
      decision.target && isForward(task.state, decision.target.state) ? decision.target : undefined;
    // The row read plus what is written is the row after the write, so the UPDATEs return no columns:
    // mapping every column back was a good share of what a callback cost.
    if (!target) {
      const patch = defined(decision.patch ?? {});
      if (Object.keys(patch).length === 0) return { task, changed: false };
      // The submit status changes without a version bump (the queue claims a task for kie, a lost answer
      // makes it unknown), and decisions depend on it: a cancel must not be written over a claim that is
      // sending. The state change below is guarded the same way (transition-statements.ts).
      const unchanged = and(
        eq(avatarTasks.id, task.id),
        eq(avatarTasks.version, task.version),
        eq(avatarTasks.submitStatus, task.submitStatus),
      );
      const written = await prepared(
        this.db.update(avatarTasks).set(patch).where(unchanged).returning({ id: avatarTasks.id }),
      );
      return written.length > 0 ? { task: { ...task, ...patch }, changed: false } : null;
    }
    const version = task.version + 1;
    const terminal = isTerminal(target.state);
    const changes = defined({
      ...decision.patch,
      state: target.state,
      version,
      updatedAt: now,
      ...(target.resultUrls ? { resultUrls: target.resultUrls } : {}),
      ...(target.failure ? { failureCode: target.failure.code, failureMessage: target.failure.message } : {}),
      ...(terminal ? { completedAt: now, nextCheckAt: null, leaseUntil: null } : {}),
    });
    const resultUrls = changes.resultUrls ?? task.resultUrls;
    const result = await this.transitions.execute({
      seen: task,
      changes,
      event: { state: target.state, source, at: now, message: target.message ?? null },
      copyUrls:
        target.state === 'SUCCEEDED' && this.options.copyResults && resultUrls.length > 0
          ? resultUrls
          : undefined,
    });
    return rowsOf(result).length > 0 ? { task: { ...task, ...changes }, changed: true } : null;
  }

  /** Sets columns that carry no state (scheduling, leases). */
  async patch(id: string, patch: TaskPatch, onlyIf?: { submitStatus: AvatarTaskRow['submitStatus'] }) {
    const [row] = await prepared(
      this.db
        .update(avatarTasks)
        .set(patch)
        .where(
          and(eq(avatarTasks.id, id), onlyIf ? eq(avatarTasks.submitStatus, onlyIf.submitStatus) : undefined),
        )
        .returning(),
    );
    return row;
  }

  /**
  /** Extends a lease still held (work that ended has cleared it, and a finished task needs none). */
  async renewLease(id: string, leaseMs: number, now: Date = new Date()): Promise<void> {
    await prepared(
      this.db
        .update(avatarTasks)
        .set({ leaseUntil: new Date(now.getTime() + leaseMs) })
        .where(
          and(
            eq(avatarTasks.id, id),
            isNotNull(avatarTasks.leaseUntil),
            notInArray(avatarTasks.state, terminalStates),
          ),
        ),
    );
  }

  /** Gives up leases at once, so another instance can take the tasks without waiting for them to expire. */
  async releaseLeases(ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.db.update(avatarTasks).set({ leaseUntil: null }).where(inArray(avatarTasks.id, ids));
  }

  /**
   * Marks tasks watched by a live subscriber until `until`, and brings the next check of those kie has
   * forward to `checkBy` at the latest. Only tasks kie accepted: a task still to submit keeps its place in
   * the submit loop, and is brought forward by a later renewal once kie has it.
   */
  async markWatched(ids: readonly string[], until: Date, checkBy: Date): Promise<void> {
    if (ids.length === 0) return;
    await this.markWatchedStatement.execute({
      ids: [...ids],
      until: until.toISOString(),
      checkBy: checkBy.toISOString(),
    });
  }

  /**
   * Leases up to `limit` unfinished tasks whose next check is due, skipping rows another instance holds,
   * so several pollers never work the same task at once. Watched tasks (a live subscriber is looking) come
   * first, so a crowd of unwatched ones never holds up what someone is waiting to see.
   */
  async claimDue(
    limit: number,
    leaseMs: number,
    now: Date = new Date(),
    queuedTimeoutMs = Number.POSITIVE_INFINITY,
  ): Promise<AvatarTaskRow[]> {
    if (limit <= 0) return [];
    const watched = await this.claim(
      limit,
      leaseMs,
      now,
      and(gt(avatarTasks.watchedUntil, now), eq(avatarTasks.submitStatus, 'accepted')),
    );
    const room = limit - watched.length;
    if (room <= 0) return watched;
    // The rest: tasks in the fair queue are the queue's (claimQueuedSubmits), until they have waited too long.
    const queuedTimedOut = Number.isFinite(queuedTimeoutMs)
      ? lte(avatarTasks.createdAt, new Date(now.getTime() - queuedTimeoutMs))
      : sql`false`;
    const unqueued = or(
      ne(avatarTasks.state, 'PENDING'),
      ne(avatarTasks.submitStatus, 'queued'),
      queuedTimedOut,
    );
    return [...watched, ...(await this.claim(room, leaseMs, now, unqueued))];
  }

  /** Leases up to `limit` due, unleased, unfinished tasks that also meet `condition`, the earliest due first. */
  private claim(limit: number, leaseMs: number, now: Date, condition: SQL | undefined) {
    const due = this.db
      .select({ id: avatarTasks.id })
      .from(avatarTasks)
      .where(
        and(
          notInArray(avatarTasks.state, terminalStates),
          lte(avatarTasks.nextCheckAt, now),
          or(isNull(avatarTasks.leaseUntil), lte(avatarTasks.leaseUntil, now)),
          condition,
        ),
      )
      .orderBy(asc(avatarTasks.nextCheckAt))
      .limit(limit)
      .for('update', { skipLocked: true });
    return prepared(
      this.db
        .update(avatarTasks)
        .set({ leaseUntil: new Date(now.getTime() + leaseMs) })
        .where(inArray(avatarTasks.id, due))
        .returning(),
    );
  }

  /**
   * Takes what kie's create window has free, for the queued submits whose turn it is, holding the window's
   * advisory lock, so instances sharing the database share kie's limit. Fair turns: a user's n-th queued task
   * competes as turn (slots the user took in the window) + n, so one user's burst cannot push back another
   * user's first task, and a tie goes to whoever was served longest ago. Each taken task is marked in_flight,
   * so no other instance sends it, and its slot is recorded. With `only`, just that task is taken, and only if
   * its turn is among the free slots: a create sends its own task when it may, and leaves the others' turns to
   * the submit loop. A new task is the create's own until then (its next check is later), and joins the queue
   * for every instance when its turn has not come.
   *
   * All of it is one call of `avatar_claim_create_slots` (drizzle/0002_create_window_claim.sql): the lock is
   * shared by every create of every instance, so it is held for the database's own work, not across round trips.
   * `only` is the create's own row, which the claim's changes are applied to; the submit loop reads its rows.
   */
  async claimQueuedSubmits(
    window: CreateWindow,
    options: { only?: AvatarTaskRow; now?: Date } = {},
  ): Promise<ClaimedSubmit[]> {
    const now = options.now ?? new Date();
    const claims = rowsOf(
      await this.claimCreateSlotsCall.execute({
        maxCreates: window.maxCreates,
        windowMs: window.windowMs,
        leaseMs: window.leaseMs,
        fairnessMemoryMs: FAIRNESS_MEMORY_MS,
        only: options.only?.id ?? null,
        now: now.toISOString(),
      }),
    ) as Array<{ task_id: string; slot_id: string; submit_attempts: number; lease_until: string | Date }>;
    if (claims.length === 0) return [];
    const own = options.only;
    const tasks = own
      ? [own]
      : await this.db
          .select()
          .from(avatarTasks)
          .where(
            inArray(
              avatarTasks.id,
              claims.map((claim) => claim.task_id),
            ),
          );
    const byId = new Map(tasks.map((task) => [task.id, task]));
    return claims.flatMap((claim) => {
      const task = byId.get(claim.task_id);
      if (!task) return [];
      const leaseUntil = new Date(claim.lease_until);
      return [
        {
          // The loop's rows were read after the claim; the create's own is the row it inserted, claimed since.
          task: own
            ? {
                ...task,
                submitStatus: 'in_flight' as const,
                submitAttempts: claim.submit_attempts,
                leaseUntil,
                nextCheckAt: leaseUntil,
              }
            : task,
          slotId: claim.slot_id,
        },
      ];
    });
  }

  /**
   * A slot counts from when its create was answered (or given up), not only from when it was taken: kie
   * counts a create when it arrives, which is somewhere in between, so however long the request took, no
   * later slot can make kie see more than the limit in its window.
   */
  async slotUsedUntilNow(slotId: string): Promise<void> {
    await prepared(
      this.db
        .update(kieCreateSlots)
        .set({ takenAt: sql`clock_timestamp()` })
        .where(eq(kieCreateSlots.id, slotId)),
    );
  }

  /** Whether any submit waits for its turn now: a cheap look before taking the window's lock. */
  async hasQueuedSubmits(now: Date = new Date()): Promise<boolean> {
    const [row] = await this.db
      .select({ id: avatarTasks.id })
      .from(avatarTasks)
      .where(
        and(
          eq(avatarTasks.state, 'PENDING'),
          eq(avatarTasks.submitStatus, 'queued'),
          lte(avatarTasks.nextCheckAt, now),
        ),
      )
      .limit(1);
    return row !== undefined;
  }

  async countQueuedSubmits(): Promise<number> {
    const [row] = await this.db
      .select({ count: sql<number>`count(*)::int` })
      .from(avatarTasks)
      .where(and(eq(avatarTasks.state, 'PENDING'), eq(avatarTasks.submitStatus, 'queued')));
    return row?.count ?? 0;
  }
}

type Transaction = Parameters<Parameters<Database['transaction']>[0]>[0];

/** The new PENDING row and its first event; null when the user's idempotency key is already taken. */
async function insertTask(tx: Transaction, task: NewTask, now: Date): Promise<AvatarTaskRow | null> {
  const [row] = await prepared(
    tx
      .insert(avatarTasks)
      .values({
        ...task,
        state: 'PENDING',
        version: 1,
        submitStatus: 'queued',
        createdAt: now,
        updatedAt: now,
      })
      .onConflictDoNothing()
      .returning(),
  );
  if (!row) return null;
  await prepared(
    tx.insert(avatarTaskEvents).values({
      taskId: row.id,
      version: 1,
      state: 'PENDING',
      source: 'MUTATION',
      at: now,
      message: null,
    }),
  );
  return row;
}

/**
 * The row avatar_insert_task_within_quota inserted, built here rather than read back: what the task was given,
 * PENDING at version 1, and every other column's default (src/db/schema.ts).
 */
function newRow(task: CreatedTask, now: Date): AvatarTaskRow {
  return {
    ...task,
    state: 'PENDING',
    upstreamTaskId: null,
    resultUrls: [],
    failureCode: null,
    failureMessage: null,
    creditsCharged: null,
    version: 1,
    submitStatus: 'queued',
    submitAttempts: 0,
    submittedAt: null,
    pollAttempts: 0,
    leaseUntil: null,
    watchedUntil: null,
    createdAt: now,
    updatedAt: now,
    completedAt: null,
  };
}
