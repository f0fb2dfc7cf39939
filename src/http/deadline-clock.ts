/** Something that must end at a given time. */
export interface Expirable {
  expire(): void;
}

/**
 * Ends things at their deadline from one shared timer, checked every `checkMs`, instead of a timer per stream:
 * a stream's deadline is its token's `exp`, often weeks away in development, past what setTimeout can count
 * (2^31 ms), and a timer per stream is memory every open stream would pay.
 */
export class DeadlineClock {
  private readonly deadlines = new Map<Expirable, number>();
  private readonly timer: NodeJS.Timeout;

  constructor(checkMs = 1_000) {
    this.timer = setInterval(() => this.expireDue(), checkMs);
    this.timer.unref();
  }

  /** `item.expire()` is called once `atMs` has passed, unless `cancel(item)` comes first. */
  at(item: Expirable, atMs: number): void {
    this.deadlines.set(item, atMs);
  }

  cancel(item: Expirable): void {
    this.deadlines.delete(item);
  }

  stop(): void {
    clearInterval(this.timer);
    this.deadlines.clear();
  }

  private expireDue(): void {
    const now = Date.now();
    for (const [item, atMs] of this.deadlines) {
      if (atMs > now) continue;
      this.deadlines.delete(item);
      item.expire();
    }
  }
}
