/**
 * One clock for several processes. Each process's `performance.now()` counts from its own start, so a
 * moment taken in a load-generator child cannot be compared with one taken here. Both are read from the
 * same CLOCK_MONOTONIC (libuv's hrtime, which `process.hrtime` returns unshifted and every process on the
 * machine shares), so a child converts its moments to that clock before reporting them, and the receiver
 * converts them back to its own `performance.now()`.
 */

const monotonicMs = () => Number(process.hrtime.bigint()) / 1e6;

/** What to add to this process's performance.now() to get the shared monotonic clock (a constant). */
const offsetMs = (() => {
  // The two reads are a few hundred nanoseconds apart; the closest pair of five is the offset.
  let best = Number.POSITIVE_INFINITY;
  let offset = 0;
  for (let i = 0; i < 5; i++) {
    const before = performance.now();
    const shared = monotonicMs();
    const after = performance.now();
    if (after - before < best) {
      best = after - before;
      offset = shared - (before + after) / 2;
    }
  }
  return offset;
})();

/** A moment of this process's performance.now(), on the clock every process shares. */
export function toSharedClock(performanceMs: number): number {
  return performanceMs + offsetMs;
}

/** A moment another process reported on the shared clock, as this process's performance.now(). */
export function fromSharedClock(sharedMs: number): number {
  return sharedMs - offsetMs;
}
