import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js';
import { migrate as migratePostgres } from 'drizzle-orm/postgres-js/migrator';
import postgres from 'postgres';
import * as schema from './schema.js';

export type Database = PgDatabase<PgQueryResultHKT, typeof schema>;
export type DatabaseSchema = typeof schema;

export interface DatabaseHandle {
  db: Database;
  kind: 'postgres' | 'pglite';
  /** The postgres.js client, present on a real Postgres: the event bus listens through it. */
  client: postgres.Sql | undefined;
  /** Runs drizzle-kit's migrations from `drizzle/`; safe to call from several instances at once. */
  migrate(): Promise<void>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

const migrationsFolder = fileURLToPath(new URL('../../drizzle', import.meta.url));
// An arbitrary, fixed key: every gateway instance takes the same advisory lock while it migrates.
const MIGRATION_LOCK_KEY = 4_201_337;

export type DatabaseLocation = { url: string; poolSize?: number } | { dataDir: string } | { memory: true };

export async function openDatabase(location: DatabaseLocation): Promise<DatabaseHandle> {
  if ('url' in location) return openPostgres(location.url, location.poolSize ?? 10);
  return openPglite(location);
}

/**
 * The embedded database, loaded only when it is used: PGlite and its drizzle driver are about 4.6 MB of heap
 * that a gateway on Postgres would otherwise carry, and every full collection would mark.
 */
async function openPglite(location: { dataDir: string } | { memory: true }): Promise<DatabaseHandle> {
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
  const db = drizzlePglite(pglite, { schema });
  return {
    db,
    kind: 'pglite',
    client: undefined,
    migrate: () => migratePglite(db, { migrationsFolder }),
    ping: async () => {
      await db.execute(sql`select 1`);
    },
    close: () => pglite.close(),
  };
}

function openPostgres(url: string, poolSize: number): DatabaseHandle {
  const client = postgres(url, {
    max: poolSize,
    onnotice: () => {},
    connection: { application_name: 'avatar-gateway' },
  });
  const db = drizzlePostgres(client, { schema });
  return {
    db,
    kind: 'postgres',
    client,
    migrate: async () => {
      const lockHolder = await client.reserve();
      try {
        await lockHolder`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`;
        await migratePostgres(db, { migrationsFolder });
      } finally {
        await lockHolder`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`.catch(() => {});
        lockHolder.release();
      }
    },
    ping: async () => {
      await client`select 1`;
    },
    close: () => client.end({ timeout: 5 }),
  };
}
