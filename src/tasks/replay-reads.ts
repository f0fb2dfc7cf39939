import type { AvatarTaskRow } from '../db/schema.js';

/** Where a replay page starts: tasks changed after `since`, or at `since` after the task `afterId`. */
export interface ReplayPageRequest {
  userId: string;
  since: Date;
  afterId: string | undefined;
}

/** Reads several replay pages in one query: one page per request, in the order of the requests. */
export type ReadReplayPages = (
  requests: readonly ReplayPageRequest[],
  limit: number,
) => Promise<AvatarTaskRow[][]>;

export interface ReplayReadsOptions {
  /** Tasks per page (SINCE_REPLAY_PAGE_SIZE). */
  pageSize: number;
  /** Pages one query reads at most: what a query returns is bounded by this times the page size. */
  maxPagesPerQuery?: number;
  /**
   * Queries in flight at once, so replays leave the rest of the pool to callbacks and requests. Past the first,
   * a query goes out only with a full one's worth of pages waiting.
   */
  maxQueriesInFlight?: number;
}

interface Pending extends ReplayPageRequest {
  resolve(page: AvatarTaskRow[]): void;
  reject(error: unknown): void;
}

/**
 * Replay pages of every stream, read together. When thousands of clients reconnect at once (the gateway
 * restarted, and each resubscribes with `since`), each stream's replay would be a query of its own; here the
 * pages asked for in the same turn of the event loop, or while an earlier query is still out, go out as one
 * query (repository.listUpdatedSinceForMany), as a DataLoader batches. A query that fails fails each of its
 * pages, and each stream retries its own as before.
 *
 * One query is out at a time while pages trickle in; a second goes out beside it only when a full query's
 * worth is waiting. Reconnecting SSE clients arrive a request at a time, and with four queries allowed out
 * whenever any page waited, their replays seldom met a query in flight: 2,000 clients took 2,000 queries, and
 * with this rule 490-770 (`npm run bench -- --only reconnect-storm`).
 */
export class ReplayReads {
  private readonly pageSize: number;
  private readonly maxPagesPerQuery: number;
  private readonly maxQueriesInFlight: number;
  private queued: Pending[] = [];
  private inFlight = 0;
  private flushScheduled = false;

  constructor(
    private readonly readPages: ReadReplayPages,
    options: ReplayReadsOptions,
  ) {
    this.pageSize = options.pageSize;
    this.maxPagesPerQuery = options.maxPagesPerQuery ?? 100;
    this.maxQueriesInFlight = options.maxQueriesInFlight ?? 4;
  }

  /** One page of `userId`'s replay: at most `pageSize` tasks after the cursor, oldest change first. */
  read(request: ReplayPageRequest): Promise<AvatarTaskRow[]> {
    return new Promise<AvatarTaskRow[]>((resolve, reject) => {
      this.queued.push({ ...request, resolve, reject });
      this.scheduleFlush();
    });
  }

  private scheduleFlush(): void {
    if (this.flushScheduled || !this.mayStartQuery()) return;
    this.flushScheduled = true;
    // After the current turn: the pages its other streams ask for join the same query.
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  /** The first query goes at once; another joins it only when it can be full, up to maxQueriesInFlight. */
  private mayStartQuery(): boolean {
    if (this.inFlight === 0) return true;
    return this.inFlight < this.maxQueriesInFlight && this.queued.length >= this.maxPagesPerQuery;
  }

  private flush(): void {
    while (this.queued.length > 0 && this.mayStartQuery()) {
      const batch = this.queued.splice(0, this.maxPagesPerQuery);
      this.inFlight++;
      void this.run(batch);
    }
  }

  private async run(batch: Pending[]): Promise<void> {
    try {
      const pages = await this.readPages(batch, this.pageSize);
      batch.forEach((pending, index) => {
        pending.resolve(pages[index] ?? []);
      });
    } catch (error) {
      for (const pending of batch) pending.reject(error);
    } finally {
      this.inFlight--;
      // What queued meanwhile goes out once no query is out (or at once if it fills a query).
      if (this.queued.length > 0) this.scheduleFlush();
    }
  }
}
