import { isDatabaseUnavailable } from '../db/unavailable.js';

const DONE: IteratorReturnResult<undefined> = Object.freeze({ value: undefined, done: true });
/** Re-reads after the database was unavailable back off from this, doubling up to RETRY_MAX_MS. */
const RETRY_FIRST_MS = 250;
const RETRY_MAX_MS = 5_000;

/**
 * An async iterator that reads from the database only when the consumer asks for the next value and a
 * signal said something changed. It coalesces by construction: a consumer that cannot keep up reads each
 * change once, at its latest state, however many signals arrived meanwhile.
 *
 * Written by hand rather than with Repeater or an async generator because an idle subscription is what
 * a gateway holds most of: while it waits, this holds one pending promise and a few fields, where a
 * Repeater holds its executor's suspended async function, a stop promise and their closures (measured in
 * `npm run bench -- --only memory --profile`).
 */
export abstract class PullStream<T> implements AsyncIterableIterator<T> {
  /** Read but not yet taken by the consumer; usually nothing, so no array until there is. */
  private ready: T[] | undefined;
  /** Something may have changed since the last pull. */
  private dirty: boolean;
  private pulling = false;
  private finished = false;
  /** The consumer's pending next(), when it is waiting. */
  private waiting: Promise<IteratorResult<T>> | undefined;
  private resolve: ((result: IteratorResult<T>) => void) | undefined;
  private reject: ((error: unknown) => void) | undefined;
  /** Consecutive pulls that found the database unavailable, and the timer of the next try. */
  private retries = 0;
  private retryTimer: NodeJS.Timeout | undefined;

  /** `dirty`: pull on the first next(), before any signal. */
  constructor(dirty: boolean) {
    this.dirty = dirty;
  }

  /**
   * Reads what changed since the last pull. `done`: nothing will follow `items`. Called again only after
   * the previous pull returned and a new signal arrived.
   */
  protected abstract pull(): Promise<{ items: T[]; done: boolean }>;

  /** Stops listening for signals; called once, when the stream ends for whatever reason. */
  protected abstract close(): void;

  /** Something changed: read again when the consumer next asks (or now, if it is already waiting). */
  protected changed(): void {
    this.dirty = true;
    if (this.waiting) void this.fill();
  }

  /** Queues a value read outside pull(), such as the snapshot taken at subscribe time; `last`: none follow. */
  protected deliver(item: T, last: boolean): void {
    this.enqueue([item]);
    if (last) this.finish();
    if (this.resolve) this.settle({ value: this.ready?.shift() as T, done: false });
  }

  next(): Promise<IteratorResult<T>> {
    if (this.ready?.length) return Promise.resolve({ value: this.ready.shift() as T, done: false });
    if (this.finished) return Promise.resolve(DONE);
    // graphql-js and the transports never ask twice before an answer; a caller that does waits its turn.
    if (this.waiting) return this.waiting.then(() => this.next());
    this.waiting = new Promise<IteratorResult<T>>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    const waiting = this.waiting;
    if (this.dirty) void this.fill();
    return waiting;
  }

  return(): Promise<IteratorResult<T>> {
    this.finish();
    this.ready = undefined;
    this.settle(DONE);
    return Promise.resolve(DONE);
  }

  throw(error?: unknown): Promise<IteratorResult<T>> {
    void this.return();
    return Promise.reject(error);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  private async fill(): Promise<void> {
    if (this.pulling) return;
    this.pulling = true;
    try {
      while (this.waiting && this.dirty && !this.finished) {
        this.dirty = false;
        const { items, done } = await this.pull();
        this.retries = 0;
        if (this.finished) return;
        if (items.length > 0) this.enqueue(items);
        if (done) this.finish();
        const item = this.ready?.shift();
        if (item !== undefined) this.settle({ value: item, done: false });
        else if (this.finished) this.settle(DONE);
      }
    } catch (error) {
      if (isDatabaseUnavailable(error) && !this.finished) {
        // A live stream outlives a database outage: it reads again later (or at the next signal or resync)
        // instead of ending every subscription at the first failed read.
        this.dirty = true;
        this.retryLater();
        return;
      }
      this.finish();
      const reject = this.reject;
      this.forget();
      reject?.(error);
    } finally {
      this.pulling = false;
    }
  }

  private retryLater(): void {
    clearTimeout(this.retryTimer);
    const delay = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** this.retries) * (0.5 + Math.random() / 2);
    this.retries += 1;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (this.waiting) void this.fill();
    }, delay);
    this.retryTimer.unref();
  }

  private enqueue(items: T[]): void {
    if (this.ready) this.ready.push(...items);
    else this.ready = items;
  }

  private settle(result: IteratorResult<T>): void {
    const resolve = this.resolve;
    this.forget();
    resolve?.(result);
  }

  private forget(): void {
    this.waiting = undefined;
    this.resolve = undefined;
    this.reject = undefined;
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    clearTimeout(this.retryTimer);
    this.close();
  }
}
