import { and, eq, sql } from 'drizzle-orm';
import type { Database } from '../db/connection.js';
import { type PreparedSql, prepareSql } from '../db/prepared-sql.js';
import { type AvatarTaskRow, avatarTaskEvents, avatarTasks, storedResults } from '../db/schema.js';

/** The columns a state change writes, as `TaskRepository.transition` computes them. */
export type TransitionChanges = Partial<AvatarTaskRow>;

/** Everything one state change writes, besides its columns. */
export interface TransitionWrite {
  /** The row as it was read: the write happens only if it still has this version and submit status. */
  seen: Pick<AvatarTaskRow, 'id' | 'version' | 'submitStatus'>;
  changes: TransitionChanges;
  /** The event's fields; its version is `changes.version`. */
  event: { state: string; source: string; at: Date; message: string | null };
  /** The task's result URLs to copy (a SUCCEEDED task with a result store), or undefined for none. */
  copyUrls: readonly string[] | undefined;
}

/**
 * Statements are kept per set of written columns; the sets come from the code's own decisions (a handful),
 * never from a caller's input, so this is only a guard against a mistake growing the map.
 */
const MAX_SHAPES = 64;

const placeholder = (name: string) => sql.placeholder(name);

/**
 * The one statement that writes a state change: the UPDATE guarded by the version and submit status read,
 * the event, and the copy jobs of a SUCCEEDED task, in one CTE. Building that SQL through drizzle's builders
 * on every call cost a callback more CPU than any other part of its answer, and it went to Postgres unnamed,
 * so it was parsed and planned every time. It is now built once per set of columns, with placeholders, and
 * prepared: only the values change between calls.
 */
export class TransitionStatements {
  private readonly byShape = new Map<string, PreparedSql>();

  constructor(private readonly db: Database) {}

  /** Runs the write; the rows it returns are the event it appended (none when the row had changed). */
  execute(write: TransitionWrite): Promise<unknown> {
    const columns = Object.keys(write.changes).sort() as Array<keyof AvatarTaskRow>;
    // A null is written as a literal: drizzle's column encoders take no null when they fill a placeholder.
    const nulls = columns.filter((column) => write.changes[column] === null);
    const shape = `${columns.map((column) => (nulls.includes(column) ? `${column}=null` : column)).join(',')}|${write.copyUrls ? 'copies' : ''}`;
    const statement =
      this.byShape.get(shape) ?? this.prepare(shape, columns, nulls, write.copyUrls !== undefined);
    const values: Record<string, unknown> = {
      id: write.seen.id,
      seenVersion: write.seen.version,
      seenSubmitStatus: write.seen.submitStatus,
      eventVersion: write.changes.version,
      eventState: write.event.state,
      eventSource: write.event.source,
      eventAt: write.event.at.toISOString(),
      eventMessage: write.event.message,
      copyUrls: write.copyUrls ? JSON.stringify(write.copyUrls) : null,
    };
    for (const column of columns) {
      if (!nulls.includes(column)) values[`set_${column}`] = write.changes[column];
    }
    return statement.execute(values);
  }

  private prepare(
    shape: string,
    columns: ReadonlyArray<keyof AvatarTaskRow>,
    nulls: ReadonlyArray<keyof AvatarTaskRow>,
    copies: boolean,
  ): PreparedSql {
    const set = Object.fromEntries(
      columns.map((column) => [column, nulls.includes(column) ? null : placeholder(`set_${column}`)]),
    );
    const update = this.db
      .update(avatarTasks)
      .set(set)
      .where(
        and(
          eq(avatarTasks.id, placeholder('id')),
          eq(avatarTasks.version, placeholder('seenVersion')),
          eq(avatarTasks.submitStatus, placeholder('seenSubmitStatus')),
        ),
      )
      .returning({ id: avatarTasks.id });
    // The copy jobs too: a crash right after SUCCEEDED cannot lose them.
    const copyJobs = copies
      ? sql`, copies as (
          insert into ${storedResults} (task_id, position, source_url, next_attempt_at)
          select changed.id, (u.ord - 1)::integer, u.url, ${placeholder('eventAt')}::timestamptz
          from changed, jsonb_array_elements_text(${placeholder('copyUrls')}::jsonb) with ordinality as u(url, ord)
          on conflict do nothing)`
      : sql``;
    // The event is appended by the same statement, so it exists exactly when the update happened.
    const prepared = prepareSql(
      this.db,
      sql`
      with changed as ${update}${copyJobs}
      insert into ${avatarTaskEvents} (task_id, version, state, source, at, message)
      select id, ${placeholder('eventVersion')}::integer, ${placeholder('eventState')}::text,
        ${placeholder('eventSource')}::text, ${placeholder('eventAt')}::timestamptz,
        ${placeholder('eventMessage')}::text
      from changed
      returning version`,
    );
    if (this.byShape.size < MAX_SHAPES) this.byShape.set(shape, prepared);
    return prepared;
  }
}
