import type { DeadlineClock, Expirable } from './deadline-clock.js';

export interface StreamGuard<T> {
  clock: DeadlineClock;
  /** Unix milliseconds at which the stream ends (its token's expiry). */
  endsAtMs: number;
  /** The last value sent when the deadline comes, such as an UNAUTHENTICATED error. */
  expiredValue: () => T;
  /** Called exactly once when the stream ends, however it ends (done, return, throw, deadline). */
  onEnd: () => void;
}

const DONE: IteratorReturnResult<undefined> = Object.freeze({ value: undefined, done: true });

/**
 * A stream that ends at a deadline with one last value, then completes, and that reports its end once. Used by
 * the SSE transports, whose streams must not outlive the token that opened them (graphql-ws closes its socket
 * with 4403 at that moment instead).
 */
export class GuardedStream<T> implements AsyncIterableIterator<T>, Expirable {
  private ended = false;
  private expiredPending = false;
  /** Resolves the consumer's pending next() when the deadline comes first. */
  private interrupt: ((result: IteratorResult<T>) => void) | undefined;

  constructor(
    private readonly source: AsyncIterator<T>,
    private readonly guard: StreamGuard<T>,
  ) {
    if (guard.endsAtMs <= Date.now()) this.expire();
    else guard.clock.at(this, guard.endsAtMs);
  }

  next(): Promise<IteratorResult<T>> {
    if (this.expiredPending) {
      this.expiredPending = false;
      return Promise.resolve({ value: this.guard.expiredValue(), done: false });
    }
    if (this.ended) return Promise.resolve(DONE);
    return new Promise<IteratorResult<T>>((resolve, reject) => {
      this.interrupt = resolve;
      this.source.next().then(
        (result) => {
          if (this.interrupt !== resolve) return;
          this.interrupt = undefined;
          if (result.done) this.end();
          resolve(result);
        },
        (error: unknown) => {
          if (this.interrupt !== resolve) return;
          this.interrupt = undefined;
          this.end();
          reject(error);
        },
      );
    });
  }

  return(): Promise<IteratorResult<T>> {
    this.expiredPending = false;
    this.end();
    const interrupt = this.interrupt;
    this.interrupt = undefined;
    interrupt?.(DONE);
    return Promise.resolve(DONE);
  }

  throw(error?: unknown): Promise<IteratorResult<T>> {
    void this.return();
    return Promise.reject(error);
  }

  /** The deadline came: the consumer gets `expiredValue` next, then the end. */
  expire(): void {
    if (this.ended) return;
    this.end();
    const interrupt = this.interrupt;
    this.interrupt = undefined;
    if (interrupt) interrupt({ value: this.guard.expiredValue(), done: false });
    else this.expiredPending = true;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.guard.clock.cancel(this);
    void this.source.return?.();
    this.guard.onEnd();
  }
}
