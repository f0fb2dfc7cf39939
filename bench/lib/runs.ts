import { type CallbackDriver, pooled, type StepResult } from './callback-steps.js';

/**
 * A latency scenario's comparison, run several times: a single run's p99 rests on a few slow moments of a
 * shared machine (fan-out gave 1.09x to 2.62x of its baseline on one commit), so a full run repeats its
 * alternating segments, reports the run with the median p99 ratio and shows every run's ratio beside it.
 */

export interface LiveSide {
  driver: CallbackDriver;
  /** Every segment this side ran, over all runs (for the JSON file and the pooled delivery). */
  segments: StepResult[];
}

/** One run: both sides pooled over their segments. */
export interface SideBySide {
  gateway: StepResult | undefined;
  baseline: StepResult | undefined;
}

export interface RunsOptions {
  runs: number;
  segments: number;
  segmentMs: number;
  rate: number;
  maxP99Ms: number;
}

export interface RunsResult {
  /** The run whose p99 ratio is the median (the middle one of three). */
  median: SideBySide;
  /** Each run's p99 ratio, gateway over baseline, in the order they ran. */
  ratios: number[];
  /** Both sides over every run: delivery must hold in all of them. */
  all: SideBySide;
}

/** `runs` times `segments` segments per side, taking turns (who goes first alternates), pooled per run. */
export async function alternatingRuns(
  gateway: LiveSide,
  baseline: LiveSide,
  options: RunsOptions,
): Promise<RunsResult> {
  const { runs: count, segments, segmentMs, rate, maxP99Ms } = options;
  const runs: SideBySide[] = [];
  let turn = 0;
  for (let run = 0; run < count; run++) {
    const steps = new Map<LiveSide, StepResult[]>([
      [gateway, []],
      [baseline, []],
    ]);
    for (let segment = 0; segment < segments; segment++, turn++) {
      const order = turn % 2 === 0 ? [gateway, baseline] : [baseline, gateway];
      for (const side of order) {
        const step = await side.driver.step(rate, segmentMs, maxP99Ms);
        if (!step) continue;
        side.segments.push(step);
        steps.get(side)?.push(step);
      }
    }
    runs.push({
      gateway: pooled(steps.get(gateway) ?? [], maxP99Ms),
      baseline: pooled(steps.get(baseline) ?? [], maxP99Ms),
    });
  }
  const ratios = runs.map(p99Ratio);
  const byRatio = runs.map((_, index) => index).sort((a, b) => (ratios[a] ?? 0) - (ratios[b] ?? 0));
  const median = runs[byRatio[Math.floor((runs.length - 1) / 2)] ?? 0] ?? {
    gateway: undefined,
    baseline: undefined,
  };
  return {
    median,
    ratios,
    all: { gateway: pooled(gateway.segments, maxP99Ms), baseline: pooled(baseline.segments, maxP99Ms) },
  };
}

const p99Ratio = ({ gateway, baseline }: SideBySide) =>
  gateway && baseline ? gateway.latency.p99 / baseline.latency.p99 : Number.POSITIVE_INFINITY;

/** "1.21x, 1.48x, 2.03x": every run's ratio, for the result's note. */
export function describeRatios(ratios: readonly number[]): string {
  return ratios.map((ratio) => `${ratio.toFixed(2)}x`).join(', ');
}
