import type { AvatarTaskEventRow, AvatarTaskRow } from '../db/schema.js';

const PRELOADED_EVENTS = Symbol('preloaded events');

type WithEvents = AvatarTaskRow & { [PRELOADED_EVENTS]?: AvatarTaskEventRow[] };

/**
 * A task row that carries its history, read together with it. A stream's final update is read this way, so
 * the stream's own retries cover both reads: a history read failing later, while the update is being sent,
 * would lose the one update after which the stream ends.
 */
export function withPreloadedEvents(task: AvatarTaskRow, events: AvatarTaskEventRow[]): AvatarTaskRow {
  (task as WithEvents)[PRELOADED_EVENTS] = events;
  return task;
}

/** The history read with the row, if it was. */
export function preloadedEvents(task: AvatarTaskRow): AvatarTaskEventRow[] | undefined {
  return (task as WithEvents)[PRELOADED_EVENTS];
}
