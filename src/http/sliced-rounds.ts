/** A round is split into this many slices by default, so the visits of a period never leave in one burst. */
const DEFAULT_SLICES = 24;

/**
 * Visits every member once per period from one shared timer, a slice of the members per tick. Visiting
 * 10,000 sockets in one turn stalls the event loop for tens of milliseconds, which every live update would wait
 * behind (the fan-out bench showed it as p99 spikes); a slice at a time spreads them over the period, as
 * per-member timers did, without a timer and its closure per member.
 *
 * Members sit in fixed groups rather than behind an iterator kept across ticks: a Set iterator pins the Set's
 * old table, and with it every member removed meanwhile.
 */
export class SlicedRounds<T> {
  private readonly slices: Set<T>[];
  private nextSlice = 0;
  private tick = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(periodMs: number, visit: (member: T) => void, sliceCount = DEFAULT_SLICES) {
    this.slices = Array.from({ length: sliceCount }, () => new Set<T>());
    this.timer = setInterval(
      () => {
        const slice = this.slices[this.tick] as Set<T>;
        this.tick = (this.tick + 1) % sliceCount;
        for (const member of slice) visit(member);
      },
      Math.max(1, Math.floor(periodMs / sliceCount)),
    );
    this.timer.unref();
  }

  add(member: T): void {
    this.slices[this.nextSlice]?.add(member);
    this.nextSlice = (this.nextSlice + 1) % this.slices.length;
  }

  delete(member: T): void {
    for (const slice of this.slices) if (slice.delete(member)) return;
  }

  *members(): IterableIterator<T> {
    for (const slice of this.slices) yield* slice;
  }

  /** Stops the timer and forgets every member. */
  stop(): void {
    clearInterval(this.timer);
    for (const slice of this.slices) slice.clear();
  }
}
