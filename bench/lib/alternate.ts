import { closedLoop } from './load.js';
import { withCpu } from './measure.js';
import type { ServerProcess } from './processes.js';

/**
 * Throughput on a shared machine drifts by tens of percent over a minute, so the gateway and its baseline run
 * side by side and take turns in short rounds (gateway first, then baseline first, and so on). Each round
 * gives one ratio; the median ratio is what the table reports.
 */

export interface Round {
  throughput: number;
  /** Share of its core the server used in the round. */
  cpu: number;
  latencies: number[];
  failed: number;
  firstError: string | undefined;
}

export interface Side {
  server: ServerProcess;
  /** One request; resolves whether the answer was right. `index` counts across all rounds of this side. */
  request(index: number): Promise<boolean>;
}

export interface Alternated {
  gateway: Round[];
  baseline: Round[];
  /** gateway / baseline throughput, per round. */
  ratios: number[];
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

export async function alternate(options: {
  rounds: number;
  roundMs: number;
  warmupMs: number;
  concurrency: number;
  /**
   * Requests per side in the warm-up and in each round, when the work is fixed (seeded callbacks) rather than
   * timed: index 0 is the warm-up, index r + 1 round r.
   */
  limits?: readonly number[];
  gateway: Side;
  baseline: Side;
}): Promise<Alternated> {
  const next = new Map<Side, number>([
    [options.gateway, 0],
    [options.baseline, 0],
  ]);
  const run = async (side: Side, durationMs: number, limit?: number): Promise<Round> => {
    const start = next.get(side) ?? 0;
    const { result, cpu } = await withCpu(side.server, () =>
      closedLoop({
        concurrency: options.concurrency,
        durationMs,
        limit,
        request: (index) => side.request(start + index),
      }),
    );
    next.set(side, start + result.completed + result.failed);
    return {
      throughput: (result.completed * 1000) / Math.max(1, result.elapsedMs),
      cpu,
      latencies: result.latencies,
      failed: result.failed,
      firstError: result.firstError,
    };
  };
  // Warm-up: JIT, pools, caches; not counted.
  await run(options.gateway, options.warmupMs, options.limits?.[0]);
  await run(options.baseline, options.warmupMs, options.limits?.[0]);
  const result: Alternated = { gateway: [], baseline: [], ratios: [] };
  for (let round = 0; round < options.rounds; round++) {
    const order = round % 2 === 0 ? [options.gateway, options.baseline] : [options.baseline, options.gateway];
    const rounds = new Map<Side, Round>();
    for (const side of order) rounds.set(side, await run(side, options.roundMs, options.limits?.[round + 1]));
    const g = rounds.get(options.gateway) as Round;
    const b = rounds.get(options.baseline) as Round;
    result.gateway.push(g);
    result.baseline.push(b);
    result.ratios.push(g.throughput / b.throughput);
  }
  return result;
}
