/** Load shapes: a closed loop (N workers back to back) and an open loop (a steady rate, whatever the server does). */

/** Runs `work` over `items` with at most `limit` at once; resolves when all are done. */
export async function mapLimit<T>(
  items: readonly T[],
  limit: number,
  work: (item: T, index: number) => Promise<void>,
) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      await work(items[index] as T, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

export interface ClosedLoopResult {
  completed: number;
  failed: number;
  elapsedMs: number;
  /** Per-request latencies in ms, measured part only. */
  latencies: number[];
  firstError: string | undefined;
}

/**
 * `concurrency` workers each send the next request as soon as the last one answered, for `durationMs` after
 * a `warmupMs` whose requests are not counted (JIT, pools, caches), or until `limit` requests were sent.
 * `request` returns whether the answer was right.
 */
export async function closedLoop(options: {
  concurrency: number;
  durationMs: number;
  warmupMs?: number;
  limit?: number;
  request: (index: number) => Promise<boolean>;
}): Promise<ClosedLoopResult> {
  const warmupMs = options.warmupMs ?? 0;
  const started = performance.now();
  const measureFrom = started + warmupMs;
  const stopAt = measureFrom + options.durationMs;
  const latencies: number[] = [];
  let completed = 0;
  let failed = 0;
  let firstError: string | undefined;
  let index = 0;
  let lastEnd = measureFrom;
  const worker = async () => {
    while (performance.now() < stopAt && (options.limit === undefined || index < options.limit)) {
      const mine = index++;
      const begin = performance.now();
      let ok = false;
      try {
        ok = await options.request(mine);
        if (!ok) firstError ??= `request ${mine} got a wrong answer`;
      } catch (error) {
        firstError ??= (error as Error).message;
      }
      const end = performance.now();
      if (begin >= measureFrom) {
        if (ok) {
          completed++;
          latencies.push(end - begin);
        } else failed++;
        lastEnd = Math.max(lastEnd, end);
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  return { completed, failed, elapsedMs: lastEnd - measureFrom, latencies, firstError };
}

export interface OpenLoopResult {
  sent: number;
  /** What the sender achieved; below the asked rate when the server could not keep up. */
  achievedRate: number;
  /** The number of requests in flight reached the cap at some point: the server fell behind. */
  saturated: boolean;
  failed: number;
  firstError: string | undefined;
}

/**
 * Sends `count` requests at `rate` per second on a fixed schedule (open loop: a slow answer does not slow the
 * sender, as kie's callbacks would not slow down), with at most `maxInFlight` outstanding.
 */
export async function openLoop(options: {
  rate: number;
  count: number;
  maxInFlight: number;
  send: (index: number) => Promise<boolean>;
}): Promise<OpenLoopResult> {
  const { rate, count, maxInFlight } = options;
  const started = performance.now();
  let sent = 0;
  let inFlight = 0;
  let failed = 0;
  let saturated = false;
  let firstError: string | undefined;
  const outstanding = new Set<Promise<void>>();
  while (sent < count) {
    const due = Math.min(count, Math.floor(((performance.now() - started) * rate) / 1000) + 1);
    while (sent < due) {
      if (inFlight >= maxInFlight) {
        saturated = true;
        break;
      }
      const index = sent++;
      inFlight++;
      const promise = options
        .send(index)
        .then(
          (ok) => {
            if (!ok) {
              failed++;
              firstError ??= `request ${index} got a wrong answer`;
            }
          },
          (error: unknown) => {
            failed++;
            firstError ??= (error as Error).message;
          },
        )
        .finally(() => {
          inFlight--;
          outstanding.delete(promise);
        });
      outstanding.add(promise);
    }
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  const sendMs = performance.now() - started;
  await Promise.all(outstanding);
  return { sent, achievedRate: (sent * 1000) / Math.max(1, sendMs), saturated, failed, firstError };
}
