import {
  type AnyColumn,
  and,
  asc,
  eq,
  getTableColumns,
  getTableName,
  inArray,
  isNull,
  lte,
  or,
  type SQL,
  sql,
} from 'drizzle-orm';
import type { Database } from '../db/connection.js';
import { type StoredResultRow, storedResults } from '../db/schema.js';

export interface StoredCopy {
  storageKey: string;
  contentType: string;
  sizeBytes: number;
  sha256: string;
  durationSeconds: number | null;
  storedAt: Date;
  expiresAt: Date;
}

const storedResultColumns = Object.entries(getTableColumns(storedResults));

/**
 * A subquery for a statement that reads tasks: the stored copies of the task whose id is `taskId`, as one
 * value, so the statement reads its tasks' copies along with them. A history page did a second round trip
 * for them (the page, then stored_results for its tasks). Null when the task has none.
 */
export function storedResultsOfTask(taskId: AnyColumn): SQL<StoredResultRow[] | null> {
  // Qualified by hand: drizzle writes the columns of a one-table statement unqualified, and a bare "id" in
  // here would be the copy's own.
  const outer = sql`${sql.identifier(getTableName(taskId.table))}.${sql.identifier(taskId.name)}`;
  return sql`(select json_agg(copy order by copy.position) from ${storedResults} copy where copy.task_id = ${outer})`.mapWith(
    decodeStoredResults,
  );
}

/** Each row as json_agg wrote it (keys are column names), through its columns' own drizzle mappings. */
function decodeStoredResults(value: unknown): StoredResultRow[] {
  const rows = (typeof value === 'string' ? JSON.parse(value) : value) as Array<Record<string, unknown>>;
  return rows.map((json) => {
    const row: Record<string, unknown> = {};
    for (const [key, column] of storedResultColumns) {
      const raw = json[column.name];
      row[key] = raw == null ? null : column.mapFromDriverValue(raw);
    }
    return row as StoredResultRow;
  });
}

/** The only module that touches stored_results (its rows are created with the SUCCEEDED transition). */
export class StoredResultRepository {
  /**
   * Every page of results reads its copies with this: one array parameter however many tasks the page has, so
   * the statement is built once and Postgres parses and plans it once per connection, not once per page.
   */
  private readonly forTasks;

  constructor(private readonly db: Database) {
    this.forTasks = db
      .select()
      .from(storedResults)
      .where(sql`${storedResults.taskId} = any(${sql.placeholder('taskIds')}::uuid[])`)
      .orderBy(asc(storedResults.taskId), asc(storedResults.position))
      .prepare('stored_results_for_tasks');
  }

  /** The rows of these tasks, for their result URLs. */
  async listForTasks(taskIds: readonly string[]): Promise<StoredResultRow[]> {
    if (taskIds.length === 0) return [];
    return this.forTasks.execute({ taskIds: [...taskIds] });
  }

  /**
   * Leases up to `limit` copies that are due, skipping rows another instance holds (the poller's pattern), so
   * two instances never copy one result at once and a dead instance's copies are taken over after its lease.
   */
  async claimDue(limit: number, leaseMs: number, now = new Date()): Promise<StoredResultRow[]> {
    if (limit <= 0) return [];
    return this.claim(
      and(eq(storedResults.status, 'copying'), lte(storedResults.nextAttemptAt, now)),
      storedResults.nextAttemptAt,
      limit,
      leaseMs,
      now,
    );
  }

  /** Leases up to `limit` stored copies past their retention, for the sweeper to delete. */
  async claimExpired(limit: number, leaseMs: number, now = new Date()): Promise<StoredResultRow[]> {
    return this.claim(
      and(eq(storedResults.status, 'stored'), lte(storedResults.expiresAt, now)),
      storedResults.expiresAt,
      limit,
      leaseMs,
      now,
    );
  }

  private claim(
    condition: ReturnType<typeof and>,
    order: typeof storedResults.nextAttemptAt,
    limit: number,
    leaseMs: number,
    now: Date,
  ): Promise<StoredResultRow[]> {
    const due = this.db
      .select({ id: storedResults.id })
      .from(storedResults)
      .where(and(condition, or(isNull(storedResults.leaseUntil), lte(storedResults.leaseUntil, now))))
      .orderBy(asc(order))
      .limit(limit)
      .for('update', { skipLocked: true });
    return this.db
      .update(storedResults)
      .set({ leaseUntil: new Date(now.getTime() + leaseMs) })
      .where(inArray(storedResults.id, due))
      .returning();
  }

  /** Extends a lease still held (the shape whileLeased renews). */
  async renewLease(id: string, leaseMs: number, now = new Date()): Promise<void> {
    await this.db
      .update(storedResults)
      .set({ leaseUntil: new Date(now.getTime() + leaseMs) })
      .where(and(eq(storedResults.id, id), sql`${storedResults.leaseUntil} is not null`));
  }

  async releaseLeases(ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.db.update(storedResults).set({ leaseUntil: null }).where(inArray(storedResults.id, ids));
  }

  async markStored(id: string, copy: StoredCopy): Promise<void> {
    await this.db
      .update(storedResults)
      .set({ ...copy, status: 'stored', nextAttemptAt: null, leaseUntil: null, lastError: null })
      .where(and(eq(storedResults.id, id), eq(storedResults.status, 'copying')));
  }

  /** A failed attempt: tried again at `nextAttemptAt`, or given up (`failed`) when that is undefined. */
  async markAttemptFailed(id: string, attempts: number, error: string, nextAttemptAt: Date | undefined) {
    await this.db
      .update(storedResults)
      .set({
        attempts,
        lastError: error.slice(0, 1000),
        leaseUntil: null,
        nextAttemptAt: nextAttemptAt ?? null,
        ...(nextAttemptAt ? {} : { status: 'failed' as const }),
      })
      .where(and(eq(storedResults.id, id), eq(storedResults.status, 'copying')));
  }

  async markRemoved(id: string): Promise<void> {
    await this.db
      .update(storedResults)
      .set({ status: 'removed', leaseUntil: null })
      .where(and(eq(storedResults.id, id), eq(storedResults.status, 'stored')));
  }
}
