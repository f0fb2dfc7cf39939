import { randomUUID } from 'node:crypto';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DatabaseHandle } from '../../src/db/connection.js';
import { TaskRepository } from '../../src/tasks/repository.js';
import { WatchedTasks } from '../../src/tasks/watched-tasks.js';
import { createTestDatabase, hasPostgres, type TestDatabase } from '../helpers/database.js';

// Row locks are Postgres's; the embedded PGlite serves one connection at a time and has nobody to wait for.
describe.skipIf(!hasPostgres())('watched marks on postgres', () => {
  let database: TestDatabase;
  let handle: DatabaseHandle;
  let repository: TaskRepository;
  const sql = () => {
    if (!handle.client) throw new Error('no postgres.js client');
    return handle.client;
  };

  beforeAll(async () => {
    database = await createTestDatabase('postgres');
    handle = await database.open();
    await handle.migrate();
    repository = new TaskRepository(handle.db);
  });
  afterAll(async () => {
    await database?.dispose();
  });

  async function waitingTask(): Promise<string> {
    const id = randomUUID();
    await sql()`insert into avatar_tasks (id, user_id, state, model, image_url, audio_url, input_hash,
        callback_secret, version, submit_status, next_check_at, created_at, updated_at)
      values (${id}, 'watcher', 'WAITING', 'PRO', 'https://example.com/a.png', 'https://example.com/a.mp3', 'h',
        's', 2, 'accepted', now() + interval '1 hour', now(), now())`;
    return id;
  }

  const watchedUntil = async (id: string) => {
    const [row] = await sql()`select watched_until from avatar_tasks where id = ${id}`;
    const value = row?.watched_until as string | Date | null | undefined;
    return value == null ? null : new Date(value).getTime();
  };

  it('marks every unlocked task at once, leaving one a state change holds for the next renewal', async () => {
    const held = await waitingTask();
    const free = await waitingTask();
    const until = new Date(Date.now() + 60_000);
    let release: () => void = () => {};
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    // A callback's write in progress on `held`: it keeps the row locked until it commits.
    let locked: () => void = () => {};
    const isLocked = new Promise<void>((resolve) => {
      locked = resolve;
    });
    const writer = sql().begin(async (tx) => {
      await tx`select id from avatar_tasks where id = ${held} for update`;
      locked();
      await released;
    });
    await isLocked;
    const started = Date.now();
    try {
      await repository.markWatched([held, free], until, new Date(Date.now() + 1_000));
      // Not held up by the locked row: without SKIP LOCKED this waits until the writer commits.
      expect(Date.now() - started).toBeLessThan(2_000);
      expect(await watchedUntil(free)).toBe(until.getTime());
      expect(await watchedUntil(held)).toBeNull();
    } finally {
      release();
      await writer;
    }
  });

  it('spreads a renewal over half its interval, a chunk of 100 at a time, not one burst of row updates', async () => {
    const ids: string[] = [];
    for (let index = 0; index < 250; index += 1) ids.push(await waitingTask());
    const untils = async () => {
      const rows = await sql()`select watched_until from avatar_tasks where id = any(${ids}::uuid[])`;
      return rows.map((row) =>
        row.watched_until == null ? 0 : new Date(row.watched_until as string).getTime(),
      );
    };
    // Renewed every 2 s, spread over 1 s: three chunks, 333 ms apart.
    const watched = new WatchedTasks(repository, {
      leaseMs: 6_000,
      pollIntervalMs: 1_000,
      logger: pino({ level: 'silent' }),
    });
    try {
      for (const id of ids) watched.add(id);
      await expect.poll(async () => Math.min(...(await untils())), { timeout: 5_000 }).toBeGreaterThan(0);
      const firstMarks = Math.max(...(await untils()));
      // Every task renewed once since: the earliest mark is newer than the latest first one.
      await expect
        .poll(async () => Math.min(...(await untils())), { timeout: 10_000, interval: 50 })
        .toBeGreaterThan(firstMarks);
      const renewed = await untils();
      const chunks = new Set(renewed);
      expect(chunks.size).toBe(3);
      // Back to back, the three statements were milliseconds apart.
      expect(Math.max(...renewed) - Math.min(...renewed)).toBeGreaterThanOrEqual(600);
    } finally {
      watched.stop();
    }
  });
});
