/**
 * A sliding-window limiter: at most `limit` calls in any `windowMs`. kie counts calls in a rolling window,
 * so a fixed-window reservoir (bottleneck's `reservoirRefreshInterval`) could let twice the limit through
 * across a window boundary; that is why this small one is written here.
 */
export class SlidingWindowLimiter {
  private readonly stamps: number[] = [];
  private readonly waiters: Array<() => void> = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly limit: number,
    readonly windowMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Takes a slot now and returns 0, or takes nothing and returns the milliseconds until one frees. */
  tryTake(): number {
    const wait = this.waitMs();
    if (wait === 0 && this.waiters.length === 0) {
      this.stamps.push(this.now());
      return 0;
    }
    return Math.max(wait, 1);
  }

  /** Waits, first come first served, until a slot is free, then takes it. */
  take(): Promise<void> {
    if (this.tryTake() === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      this.schedule();
    });
  }

  /** Whether a call could be made right now without waiting. */
  get available(): number {
    this.prune();
    return Math.max(0, this.limit - this.stamps.length - this.waiters.length);
  }

  private waitMs(): number {
    this.prune();
    if (this.stamps.length < this.limit) return 0;
    const oldest = this.stamps[0] ?? this.now();
    return oldest + this.windowMs - this.now();
  }

  private prune(): void {
    const cutoff = this.now() - this.windowMs;
    while (this.stamps.length > 0 && (this.stamps[0] ?? 0) <= cutoff) this.stamps.shift();
  }

  private schedule(): void {
    if (this.timer) return;
    const wait = this.waitMs();
    this.timer = setTimeout(() => {
      this.timer = undefined;
      while (this.waiters.length > 0 && this.waitMs() === 0) {
        this.stamps.push(this.now());
        this.waiters.shift()?.();
      }
      if (this.waiters.length > 0) this.schedule();
    }, wait);
    this.timer.unref();
  }
}
