import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js';
import { migrate as migratePostgres } from 'drizzle-orm/postgres-js/migrator';
import postgres from 'postgres';
import { raceDeadline, transactionWithDeadline, withQueryDeadlines } from './query-deadline.js';
import * as schema from './schema.js';
import { createWatchedSocketFactory, type WatchedSocketOptions } from './socket-watchdog.js';

export type Database = PgDatabase<PgQueryResultHKT, typeof schema>;
export type DatabaseSchema = typeof schema;

export interface DatabaseHandle {
  db: Database;
  kind: 'postgres' | 'pglite';
  /** The postgres.js client, present on a real Postgres; every query through it has a deadline. */
  client: postgres.Sql | undefined;
  /**
   * A client of its own for LISTEN, present on a real Postgres: the event bus recycles it when its
   * connection stops hearing notifications, without touching the pool.
   */
  openListener: ((onLost: () => void) => ListenerClient) | undefined;
  /** Runs drizzle-kit's migrations from `drizzle/`; safe to call from several instances at once. */
  migrate(): Promise<void>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

export interface ListenerClient {
  sql: postgres.Sql;
  /** Destroys its connection at once (it may be dead: nothing is sent) and ends the client. */
  destroy(): Promise<void>;
}

/** How long each wait on the database may take; see README "When things fail". */
export interface DatabaseDeadlines {
  connectTimeoutMs: number;
  /** The server's statement_timeout and the client's deadline for each query (or transaction). */
  statementTimeoutMs: number;
  idleTimeoutMs: number;
  keepAliveMs: number;
}

export const DEFAULT_DEADLINES: DatabaseDeadlines = {
  connectTimeoutMs: 4_000,
  statementTimeoutMs: 4_000,
  idleTimeoutMs: 60_000,
  keepAliveMs: 10_000,
};

const migrationsFolder = fileURLToPath(new URL('../../drizzle', import.meta.url));
// An arbitrary, fixed key: every gateway instance takes the same advisory lock while it migrates.
const MIGRATION_LOCK_KEY = 4_201_337;

export type DatabaseLocation =
  | { url: string; poolSize?: number; deadlines?: DatabaseDeadlines }
  | { dataDir: string; deadlines?: DatabaseDeadlines }
  | { memory: true; deadlines?: DatabaseDeadlines };

export async function openDatabase(location: DatabaseLocation): Promise<DatabaseHandle> {
  const deadlines = location.deadlines ?? DEFAULT_DEADLINES;
  if ('url' in location) return openPostgres(location.url, location.poolSize ?? 10, deadlines);
  return openPglite(location, deadlines);
}

/**
 * The embedded database, loaded only when it is used: PGlite and its drizzle driver are about 4.6 MB of heap
 * that a gateway on Postgres would otherwise carry, and every full collection would mark.
 */
async function openPglite(
  location: { dataDir: string } | { memory: true },
  deadlines: DatabaseDeadlines,
): Promise<DatabaseHandle> {
  const [{ PGlite }, { drizzle: drizzlePglite }, { migrate: migratePglite }] = await Promise.all([
    import('@electric-sql/pglite'),
    import('drizzle-orm/pglite'),
    import('drizzle-orm/pglite/migrator'),
  ]);
  let pglite: InstanceType<typeof PGlite>;
  if ('dataDir' in location) {
    const dir = path.resolve(location.dataDir, 'pglite');
    await mkdir(dir, { recursive: true });
    pglite = await PGlite.create(dir);
  } else {
    pglite = await PGlite.create();
  }
  const db = drizzlePglite(withPgliteDeadlines(pglite, deadlines.statementTimeoutMs), { schema });
  return {
    db,
    kind: 'pglite',
    client: undefined,
    openListener: undefined,
    // Migrations may take longer than a query: they run on the client without deadlines.
    migrate: () => migratePglite(drizzlePglite(pglite, { schema }), { migrationsFolder }),
    ping: async () => {
      await db.execute(sql`select 1`);
    },
    close: () => pglite.close(),
  };
}

/**
 * PGlite runs in this process, so nothing is lost on a network; but one slow statement or a long lock wait
 * holds its single connection, and every caller behind it would wait without end. The same client-side
 * deadline as on Postgres applies.
 */
function withPgliteDeadlines<T extends object>(pglite: T, deadlineMs: number): T {
  return new Proxy(pglite, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver);
      if (typeof value !== 'function') return value;
      if (property === 'query' || property === 'exec') {
        return (...args: unknown[]) => raceDeadline(value.apply(target, args), deadlineMs);
      }
      if (property === 'transaction') {
        return (body: (...args: unknown[]) => unknown) =>
          transactionWithDeadline((guarded) => value.call(target, guarded(body)), deadlineMs);
      }
      return value.bind(target);
    },
  });
}

/** Reconnect attempts back off up to half a second, so a database that is back is used again within it. */
const reconnectBackoffSeconds = (attempt: number) => Math.min(0.5, 0.05 * 2 ** attempt);

function postgresClient(
  url: string,
  max: number,
  deadlines: DatabaseDeadlines,
  events: Pick<WatchedSocketOptions, 'onLost' | 'onDead'> = {},
) {
  const sockets = createWatchedSocketFactory({
    answerTimeoutMs: deadlines.statementTimeoutMs,
    keepAliveMs: deadlines.keepAliveMs,
    ...events,
  });
  const sql = postgres(url, {
    max,
    onnotice: () => {},
    // postgres.js supports a socket factory; its type definitions do not list the option.
    ...({ socket: sockets.factory } as object),
    connect_timeout: deadlines.connectTimeoutMs / 1000,
    idle_timeout: deadlines.idleTimeoutMs / 1000,
    keep_alive: deadlines.keepAliveMs / 1000,
    backoff: reconnectBackoffSeconds,
    connection: {
      application_name: 'avatar-gateway',
      statement_timeout: deadlines.statementTimeoutMs,
      // A session left in a transaction by a dead client must not hold its locks for long.
      idle_in_transaction_session_timeout: deadlines.statementTimeoutMs,
    },
  });
  return { sql, sockets };
}

function openPostgres(url: string, poolSize: number, deadlines: DatabaseDeadlines): DatabaseHandle {
  // A dead connection's server session is ended from a live one, so locks it may hold are released now.
  const terminate = (backendPid: number) => {
    void client`select pg_terminate_backend(${backendPid})`.catch(() => {});
  };
  const { sql: pool } = postgresClient(url, poolSize, deadlines, { onDead: terminate });
  const client = withQueryDeadlines(pool, deadlines.statementTimeoutMs);
  const db = drizzlePostgres(client, { schema });
  return {
    db,
    kind: 'postgres',
    client,
    openListener: (onLost) => {
      const { sql, sockets } = postgresClient(url, 1, deadlines, { onLost });
      return {
        sql,
        destroy: async () => {
          sockets.destroyAll('the listener was recycled');
          await sql.end({ timeout: 0 }).catch(() => {});
        },
      };
    },
    migrate: async () => {
      // Migrations and the wait for another instance's may take longer than a query: a client of their own,
      // without statement deadlines.
      const migrator = postgres(url, {
        max: 2,
        onnotice: () => {},
        connect_timeout: deadlines.connectTimeoutMs / 1000,
        connection: { application_name: 'avatar-gateway' },
      });
      const lockHolder = await migrator.reserve();
      try {
        await lockHolder`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`;
        await migratePostgres(drizzlePostgres(migrator, { schema }), { migrationsFolder });
      } finally {
        await lockHolder`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`.catch(() => {});
        lockHolder.release();
        await migrator.end({ timeout: 5 });
      }
    },
    ping: async () => {
      await client`select 1`;
    },
    close: () => pool.end({ timeout: 5 }),
  };
}
