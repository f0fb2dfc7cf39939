import { afterEach, describe, expect, it, vi } from 'vitest';
import { SlidingWindowLimiter } from '../../src/upstream/rate-limiter.js';

/** A deterministic pseudo-random sequence, so a failure can be replayed. */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

/** The most calls inside any window of `windowMs` (half-open: a call exactly windowMs later is outside). */
function busiestWindow(stamps: number[], windowMs: number): number {
  let most = 0;
  for (let i = 0; i < stamps.length; i++) {
    const end = stamps[i] as number;
    most = Math.max(most, stamps.filter((stamp) => stamp > end - windowMs && stamp <= end).length);
  }
  return most;
}

describe('SlidingWindowLimiter', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('never lets more than the limit through in any window, including across window boundaries', () => {
    for (const seed of [1, 2, 3, 42, 1234]) {
      const random = seeded(seed);
      let now = 0;
      const limiter = new SlidingWindowLimiter(20, 10_000, () => now);
      const taken: number[] = [];
      for (let attempt = 0; attempt < 2000; attempt++) {
        // Bursts and lulls: most attempts close together, some far apart.
        now += random() < 0.9 ? Math.floor(random() * 50) : Math.floor(random() * 8000);
        if (limiter.tryTake() === 0) taken.push(now);
      }
      expect(busiestWindow(taken, 10_000)).toBe(20);
      // It is a limiter, not a blocker: over the run it let a fair share through.
      expect(taken.length).toBeGreaterThan(100);
    }
  });

  it('answers how long to wait, and a slot is free exactly then', () => {
    let now = 1_000;
    const limiter = new SlidingWindowLimiter(2, 1_000, () => now);
    expect(limiter.tryTake()).toBe(0);
    now = 1_300;
    expect(limiter.tryTake()).toBe(0);
    now = 1_500;
    const wait = limiter.tryTake();
    expect(wait).toBe(500);
    now += wait - 1;
    expect(limiter.tryTake()).toBeGreaterThan(0);
    now += 1;
    expect(limiter.tryTake()).toBe(0);
    // The second slot, taken at 1_300, frees at 2_300.
    expect(limiter.tryTake()).toBe(300);
  });

  it('reports the slots available now', () => {
    let now = 0;
    const limiter = new SlidingWindowLimiter(3, 1_000, () => now);
    expect(limiter.available).toBe(3);
    limiter.tryTake();
    limiter.tryTake();
    expect(limiter.available).toBe(1);
    now = 1_000;
    expect(limiter.available).toBe(3);
  });

  it('serves waiters first come, first served, one window apart', async () => {
    vi.useFakeTimers();
    const limiter = new SlidingWindowLimiter(1, 1_000, () => Date.now());
    await limiter.take();
    const served: number[] = [];
    const waiting = [1, 2, 3].map((n) => limiter.take().then(() => served.push(n)));
    await vi.advanceTimersByTimeAsync(999);
    expect(served).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(served).toEqual([1]);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(served).toEqual([1, 2]);
    await vi.advanceTimersByTimeAsync(1_000);
    await Promise.all(waiting);
    expect(served).toEqual([1, 2, 3]);
  });

  it('lets several waiters through at once when the window has room for them', async () => {
    vi.useFakeTimers();
    const limiter = new SlidingWindowLimiter(3, 1_000, () => Date.now());
    await Promise.all([limiter.take(), limiter.take(), limiter.take()]);
    const served: number[] = [];
    const waiting = [1, 2, 3, 4].map((n) => limiter.take().then(() => served.push(n)));
    await vi.advanceTimersByTimeAsync(1_000);
    expect(served).toEqual([1, 2, 3]);
    await vi.advanceTimersByTimeAsync(1_000);
    await Promise.all(waiting);
    expect(served).toEqual([1, 2, 3, 4]);
  });

  it('does not let tryTake jump ahead of queued waiters', async () => {
    let now = 0;
    const limiter = new SlidingWindowLimiter(1, 100, () => now);
    expect(limiter.tryTake()).toBe(0);
    let served = false;
    void limiter.take().then(() => {
      served = true;
    });
    // The window has passed but the waiter's timer has not fired yet: the free slot is the waiter's.
    now = 5_000;
    expect(limiter.tryTake()).toBeGreaterThan(0);
    expect(limiter.available).toBe(0);
    await vi.waitFor(() => expect(served).toBe(true), { timeout: 3_000, interval: 10 });
  });
});
