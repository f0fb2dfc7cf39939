import type { AvatarTaskRow, StoredResultRow } from '../db/schema.js';

const PRELOADED_STORED_RESULTS = Symbol('preloaded stored results');

type WithStoredResults = AvatarTaskRow & { [PRELOADED_STORED_RESULTS]?: StoredResultRow[] };

/**
 * A task row that carries its stored copies, read for a whole page of tasks at once: a `since` replay of a
 * reconnecting client sends each task as its own update, and the result URLs of each would otherwise be one
 * stored_results query per SUCCEEDED task per client; a history page reads them in its own statement.
 */
export function withPreloadedStoredResults(task: AvatarTaskRow, rows: StoredResultRow[]): AvatarTaskRow {
  (task as WithStoredResults)[PRELOADED_STORED_RESULTS] = rows;
  return task;
}

/** The stored copies read with the row, if they were. */
export function preloadedStoredResults(task: AvatarTaskRow): StoredResultRow[] | undefined {
  return (task as WithStoredResults)[PRELOADED_STORED_RESULTS];
}

/** Reads the stored copies of the SUCCEEDED tasks among `tasks` in one query and attaches them to each. */
export async function preloadStoredResults(
  tasks: readonly AvatarTaskRow[],
  listForTasks: (taskIds: readonly string[]) => Promise<StoredResultRow[]>,
): Promise<void> {
  const succeeded = tasks.filter((task) => task.state === 'SUCCEEDED' && task.resultUrls.length > 0);
  if (succeeded.length === 0) return;
  const rows = await listForTasks(succeeded.map((task) => task.id));
  for (const task of succeeded) {
    withPreloadedStoredResults(
      task,
      rows.filter((row) => row.taskId === task.id),
    );
  }
}
