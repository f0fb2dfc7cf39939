import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { afterAll, beforeAll } from 'vitest';
import { type DatabaseHandle, openDatabase } from '../../src/db/connection.js';

export type DatabaseKind = 'pglite' | 'postgres';

/** PGlite always; the real Postgres too when TEST_DATABASE_URL is set (CI always sets it). */
export function databaseKinds(): DatabaseKind[] {
  return process.env.TEST_DATABASE_URL ? ['pglite', 'postgres'] : ['pglite'];
}

export const hasPostgres = () => Boolean(process.env.TEST_DATABASE_URL);

export interface TestDatabase {
  kind: DatabaseKind;
  /** The database URL on Postgres; undefined on PGlite. */
  url: string | undefined;
  /** A handle for one gateway instance. Postgres gives each caller its own pool; PGlite shares one instance. */
  open(): Promise<DatabaseHandle>;
  dispose(): Promise<void>;
}

/**
 * A fresh, empty database for one test file: a new in-memory PGlite, or a new database created on the
 * TEST_DATABASE_URL server and dropped afterwards, so files can run in parallel.
 */
export async function createTestDatabase(kind: DatabaseKind): Promise<TestDatabase> {
  if (kind === 'pglite') {
    const shared = await openDatabase({ memory: true });
    await shared.migrate();
    return {
      kind,
      url: undefined,
      open: async () => ({ ...shared, close: async () => {} }),
      dispose: () => shared.close(),
    };
  }
  const adminUrl = process.env.TEST_DATABASE_URL;
  if (!adminUrl) throw new Error('TEST_DATABASE_URL is not set');
  const name = `avatar_gateway_test_${randomBytes(6).toString('hex')}`;
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name}`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const opened: DatabaseHandle[] = [];
  return {
    kind,
    url: url.toString(),
    open: async () => {
      const handle = await openDatabase({ url: url.toString(), poolSize: 5 });
      opened.push(handle);
      return handle;
    },
    dispose: async () => {
      await Promise.all(opened.map((handle) => handle.close().catch(() => {})));
      await admin.unsafe(`drop database if exists ${name} with (force)`);
      await admin.end();
    },
  };
}

/**
 * One fresh database for the enclosing describe block: created before its tests, dropped after them. The
 * returned handle can be passed around at once; it reaches the database only when a test uses it.
 */
export function useTestDatabase(kind: DatabaseKind): TestDatabase {
  let current: TestDatabase | undefined;
  beforeAll(async () => {
    current = await createTestDatabase(kind);
  });
  afterAll(async () => {
    await current?.dispose();
  });
  const created = () => {
    if (!current) throw new Error('the test database exists only while the block runs');
    return current;
  };
  return {
    kind,
    get url() {
      return created().url;
    },
    open: () => created().open(),
    // Dropped by the block's afterAll.
    dispose: async () => {},
  };
}
