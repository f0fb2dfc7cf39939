/**
 * Writes a list of task changes as kie's callbacks would, with the baselines' hand-written SQL (the
 * callback's single statement: the update, the version bump and the event), then reports ready; `stop` ends
 * it. The reconnect-storm scenario runs it while the server under test is down, on that server's idle core:
 * the load generator's core is busy with thousands of clients retrying their connections.
 *
 * BENCH_ENV: DATABASE_URL, and CHANGES, the path of a JSON file of `{ id, upstreamTaskId, state, resultUrls }`.
 */
import { readFileSync } from 'node:fs';
import postgres from 'postgres';
import type { UpstreamSnapshot } from '../../src/tasks/states.js';
import { TaskSql } from '../baselines/sql.js';
import { benchEnv, reportFailure, reportReady } from '../lib/child.js';
import { mapLimit } from '../lib/load.js';

export interface TaskChange {
  id: string;
  upstreamTaskId: string;
  state: UpstreamSnapshot['state'];
  resultUrls: string[];
}

const WRITERS = 8;

try {
  const env = benchEnv();
  const changes = JSON.parse(readFileSync(String(env.CHANGES), 'utf8')) as TaskChange[];
  const sql = postgres(String(env.DATABASE_URL), { max: WRITERS, onnotice: () => {}, connect_timeout: 5 });
  const tasks = new TaskSql(sql);
  await mapLimit(changes, WRITERS, async (change) => {
    const row = await tasks.findById(change.id);
    if (!row) throw new Error(`task ${change.id} is gone`);
    const result = await tasks.applySnapshot(row, {
      upstreamTaskId: change.upstreamTaskId,
      state: change.state,
      resultUrls: change.resultUrls,
    });
    if (!result?.changed) throw new Error(`task ${change.id} did not change`);
  });
  reportReady(`changes://${changes.length}`, {
    async stop() {
      await sql.end({ timeout: 5 });
    },
  });
} catch (error) {
  reportFailure(error);
}
