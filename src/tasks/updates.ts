import { Repeater } from '@repeaterjs/repeater';
import type { AvatarTaskRow } from '../db/schema.js';
import type { SignalDispatcher } from '../events/dispatcher.js';
import { TaskNotFoundError } from './errors.js';
import type { TaskRepository } from './repository.js';
import { isTerminal } from './states.js';

/** Allowance for clocks of several instances when a resync re-reads "what changed since we started". */
const CLOCK_SKEW_MS = 5_000;

/**
 * Which tasks changed since the subscriber last read. A set, not a queue: a subscriber that cannot keep up
 * reads each task once, at its latest state, however many signals arrived meanwhile.
 */
class ChangedTasks {
  private readonly ids = new Set<string>();
  private resync = false;
  private stopped = false;
  private wake: (() => void) | undefined;

  mark(id: string): void {
    this.ids.add(id);
    this.wake?.();
  }

  markResync(): void {
    this.resync = true;
    this.wake?.();
  }

  stop(): void {
    this.stopped = true;
    this.wake?.();
  }

  /** Waits for changes; null once stopped. */
  async next(): Promise<{ ids: string[]; resync: boolean } | null> {
    while (!this.stopped && this.ids.size === 0 && !this.resync) {
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = undefined;
    }
    if (this.stopped) return null;
    const batch = { ids: [...this.ids], resync: this.resync };
    this.ids.clear();
    this.resync = false;
    return batch;
  }
}

/**
 * Live task streams. Each stream listens on the bus before it reads the database, so a change committed
 * in between is seen, and it remembers the last version sent per task, so nothing is delivered twice.
 */
export class TaskUpdates {
  constructor(
    private readonly repository: TaskRepository,
    private readonly dispatcher: SignalDispatcher,
  ) {}

  /** One task: its current state, then each change, ending after a terminal state. */
  async watchTask(userId: string, taskId: string): Promise<AsyncIterableIterator<AvatarTaskRow>> {
    const changes = new ChangedTasks();
    let sentVersion = 0;
    const unwatch = this.dispatcher.watchTask(
      taskId,
      (signal) => {
        if (signal.userId === userId && signal.version > sentVersion) changes.mark(taskId);
      },
      () => changes.markResync(),
    );
    let current: AvatarTaskRow | undefined;
    try {
      current = await this.repository.findForUser(userId, taskId);
    } catch (error) {
      unwatch();
      throw error;
    }
    if (!current) {
      unwatch();
      throw new TaskNotFoundError();
    }
    let task = current;
    return new Repeater<AvatarTaskRow>(async (push, stop) => {
      stop.then(() => changes.stop());
      try {
        sentVersion = task.version;
        await push(task);
        while (!isTerminal(task.state) && (await changes.next())) {
          const fresh = await this.repository.findForUser(userId, taskId);
          if (fresh && fresh.version > sentVersion) {
            sentVersion = fresh.version;
            task = fresh;
            await push(fresh);
          }
        }
        stop();
      } catch (error) {
        stop(error);
      } finally {
        unwatch();
      }
    });
  }

  /**
   * Every change to a user's tasks. With `since`, first each task changed after that instant, oldest
   * change first, then live changes.
   */
  watchUser(userId: string, since?: Date): AsyncIterableIterator<AvatarTaskRow> {
    const changes = new ChangedTasks();
    const sentVersions = new Map<string, number>();
    const startedAt = Date.now();
    const unwatch = this.dispatcher.watchUser(
      userId,
      (signal) => {
        if (signal.version > (sentVersions.get(signal.taskId) ?? 0)) changes.mark(signal.taskId);
      },
      () => changes.markResync(),
    );
    return new Repeater<AvatarTaskRow>(async (push, stop) => {
      stop.then(() => changes.stop());
      const send = async (task: AvatarTaskRow) => {
        if (task.version <= (sentVersions.get(task.id) ?? 0)) return;
        sentVersions.set(task.id, task.version);
        await push(task);
      };
      try {
        if (since) for (const task of await this.repository.listUpdatedSince(userId, since)) await send(task);
        for (let batch = await changes.next(); batch; batch = await changes.next()) {
          if (batch.resync) {
            const missed = await this.repository.listUpdatedSince(
              userId,
              new Date(startedAt - CLOCK_SKEW_MS),
            );
            for (const task of missed) await send(task);
          }
          for (const id of batch.ids) {
            const task = await this.repository.findForUser(userId, id);
            if (task) await send(task);
          }
        }
        stop();
      } catch (error) {
        stop(error);
      } finally {
        unwatch();
      }
    });
  }
}
