import type { Logger } from 'pino';
import type { TaskRepository } from './repository.js';

/** A watch is renewed this many times per its length, so one late or failed renewal does not drop it. */
const RENEWALS_PER_LEASE = 3;
/**
 * One statement marks at most this many tasks. A statement holds the rows it updated until it ends, and a
 * callback for one of them waits that long: at 1,000 rows (tens of milliseconds on a busy database) that wait
 * was the p99 of a callback's answer with thousands of streams open. A hundred rows hold for a few.
 */
const MARK_CHUNK = 100;

export interface WatchedTasksOptions {
  /** How long a mark holds without renewal: a dead instance's watches lapse within it. */
  leaseMs: number;
  /** How soon a watched task is checked with kie (WATCHED_POLL_INTERVAL_MS). */
  pollIntervalMs: number;
  logger: Logger;
}

/**
 * The tasks someone on this instance is looking at, marked in the database so that every instance's poller
 * (whichever one leases the task) checks them sooner: kie calls back only at the end, so without it a live
 * UI sees WAITING jump to SUCCEEDED. The mark is a lease (`watched_until`), renewed while a stream is open
 * and left to lapse when the last one closes or the instance dies, so a crashed subscriber never keeps a
 * task polled. New watches are written together on the next turn of the event loop: a burst of subscriptions
 * costs one statement.
 */
export class WatchedTasks {
  private readonly streams = new Map<string, number>();
  private readonly fresh = new Set<string>();
  private flushScheduled = false;
  private writing: Promise<void> | undefined;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly repository: TaskRepository,
    private readonly options: WatchedTasksOptions,
  ) {
    this.timer = setInterval(() => this.renew(), options.leaseMs / RENEWALS_PER_LEASE);
    this.timer.unref();
  }

  /** A stream on `taskId` opened. */
  add(taskId: string): void {
    const open = this.streams.get(taskId) ?? 0;
    this.streams.set(taskId, open + 1);
    if (open > 0) return;
    this.fresh.add(taskId);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      const ids = [...this.fresh];
      this.fresh.clear();
      void this.mark(ids);
    });
  }

  /** A stream on `taskId` closed; the mark lapses on its own once no stream here renews it. */
  remove(taskId: string): void {
    const open = (this.streams.get(taskId) ?? 0) - 1;
    if (open > 0) this.streams.set(taskId, open);
    else this.streams.delete(taskId);
  }

  /** How many tasks this instance is watching (for tests and metrics). */
  get size(): number {
    return this.streams.size;
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private renew(): void {
    // A renewal still running (a slow database) is not doubled; the lease outlasts three intervals.
    if (this.writing || this.streams.size === 0) return;
    this.writing = this.mark([...this.streams.keys()]).finally(() => {
      this.writing = undefined;
    });
  }

  /** Every query has the database's deadline; a failed mark is retried by the next renewal. */
  private async mark(ids: string[]): Promise<void> {
    const { leaseMs, pollIntervalMs, logger } = this.options;
    const now = Date.now();
    try {
      for (let start = 0; start < ids.length; start += MARK_CHUNK) {
        await this.repository.markWatched(
          ids.slice(start, start + MARK_CHUNK),
          new Date(now + leaseMs),
          new Date(now + pollIntervalMs),
        );
      }
    } catch (error) {
      logger.warn({ err: error, tasks: ids.length }, 'marking watched tasks failed; retried on renewal');
    }
  }
}
