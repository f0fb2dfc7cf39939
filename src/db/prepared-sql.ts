import type { SQL } from 'drizzle-orm';
import { PgDialect } from 'drizzle-orm/pg-core';
import type { Database } from './connection.js';

export interface PreparedSql {
  /** Runs the statement with a value for each of its placeholders; the driver's rows, as `db.execute` gives. */
  execute(values: Record<string, unknown>): Promise<unknown>;
}

const dialect = new PgDialect();

/**
 * A raw statement (written with `sql` and `sql.placeholder`) built once and prepared. `db.execute` rebuilds
 * its SQL on every call and sends it unnamed, so Postgres parses and plans it each time; drizzle's query
 * builders can `.prepare()`, but a statement that is a CTE around an UPDATE, or a function call, is not one
 * of theirs. postgres.js names the statement itself (by its text); PGlite ignores the name.
 */
export function prepareSql(db: Database, statement: SQL): PreparedSql {
  return db._.session.prepareQuery(dialect.sqlToQuery(statement), undefined, 'avatar_gateway', false);
}
