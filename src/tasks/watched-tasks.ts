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
 * costs one statement. A renewal is spread over half its interval, a chunk at a time: with 10,000 streams open,
 * renewing them all in one go was a second of back-to-back row updates every 20 s, and the callbacks that
 * arrived meanwhile waited on the database (fan-out's p99 in `npm run bench`).
 */
export class WatchedTasks {
  private readonly streams = new Map<string, number>();
  private readonly fresh = new Set<string>();
  private flushScheduled = false;
  private writing: Promise<void> | undefined;
  private readonly timer: NodeJS.Timeout;
  private readonly renewEveryMs: number;
  private stopped = false;
  /** Ends the pause between two chunks of a renewal early, when the instance stops. */
  private wake: (() => void) | undefined;

  constructor(
    private readonly repository: TaskRepository,
    private readonly options: WatchedTasksOptions,
  ) {
    this.renewEveryMs = options.leaseMs / RENEWALS_PER_LEASE;
    this.timer = setInterval(() => this.renew(), this.renewEveryMs);
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
    this.stopped = true;
    clearInterval(this.timer);
    this.wake?.();
  }

  private renew(): void {
    // A renewal still running (a slow database) is not doubled; the lease outlasts three intervals.
    if (this.writing || this.streams.size === 0) return;
    this.writing = this.mark([...this.streams.keys()], this.renewEveryMs / 2).finally(() => {
      this.writing = undefined;
    });
  }

  /**
   * Marks `ids` a chunk at a time, the chunks spread evenly over `spreadMs` (0: back to back). Each chunk's
   * lease counts from when it is written. Every query has the database's deadline; a failed mark is retried
   * by the next renewal.
   */
  private async mark(ids: string[], spreadMs = 0): Promise<void> {
    const { leaseMs, pollIntervalMs, logger } = this.options;
    const chunks = Math.ceil(ids.length / MARK_CHUNK);
    const pauseMs = chunks > 1 ? spreadMs / chunks : 0;
    try {
      for (let start = 0; start < ids.length; start += MARK_CHUNK) {
        if (start > 0 && pauseMs > 0) await this.pause(pauseMs);
        if (this.stopped) return;
        // A stream closed since the renewal began lets its mark lapse.
        const chunk = ids.slice(start, start + MARK_CHUNK).filter((id) => this.streams.has(id));
        if (chunk.length === 0) continue;
        const now = Date.now();
        await this.repository.markWatched(chunk, new Date(now + leaseMs), new Date(now + pollIntervalMs));
      }
    } catch (error) {
      logger.warn({ err: error, tasks: ids.length }, 'marking watched tasks failed; retried on renewal');
    }
  }

  private pause(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      timer.unref();
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    }).finally(() => {
      this.wake = undefined;
    });
  }
}
