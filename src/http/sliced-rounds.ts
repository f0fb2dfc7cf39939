/**
 * How far apart the slices of a period are, by default. With a fixed 24 slices, 16,667 sockets were pinged 694
 * at a time: 5-17 ms of the event loop every half second, which live updates at 50,000 idle subscribers waited
 * behind (`npm run bench -- --only idle-subscribers`: gateway p99 22.7 and 60.5 ms against the raw socket's
 * 9.6 and 18.6 ms). A tick every 50 ms pings about 70 of them: 20.7 and 18.1 ms against 15.0 and 18.4 ms.
 */
const DEFAULT_TICK_MS = 50;

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

  constructor(periodMs: number, visit: (member: T) => void, tickMs = DEFAULT_TICK_MS) {
    const sliceCount = Math.max(1, Math.round(periodMs / tickMs));
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
