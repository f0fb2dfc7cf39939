import type { StepResult } from '../lib/callback-steps.js';
import { describeGc, type GcStats } from '../lib/child.js';
import { describeRatios, type RunsResult } from '../lib/runs.js';
import { type ResultRow, ratioRow } from './types.js';

export interface LiveRowsOptions {
  scenario: string;
  /** Callbacks per second of the compared segments. */
  rate: number;
  /** Who listened, for the p99 row's name, e.g. "2,000 subscribers". */
  subscribers: string;
  /** The p99 target: at most this ratio to the baseline, and below an absolute bound (ms), if any. */
  maxRatio: number;
  maxP99Ms?: number;
  segments: number;
  segmentMs: number;
  gatewayGc: GcStats | undefined;
}

/**
 * The rows of a scenario that ran its segments several times (bench/lib/runs.ts): latencies from the median
 * run, every run's p99 ratio in the note, delivery over all runs.
 */
export function liveUpdateRunRows(runs: RunsResult, options: LiveRowsOptions): ResultRow[] {
  const rows = liveUpdateRows(runs.median.gateway, runs.median.baseline, options);
  const delivery = liveUpdateRows(runs.all.gateway, runs.all.baseline, options)[2];
  const [p99, p50] = rows;
  if (!p99 || !p50 || !delivery) return rows;
  if (runs.ratios.length < 2) return [p99, p50, delivery];
  return [
    {
      ...p99,
      note: `the median of ${runs.ratios.length} runs, whose p99 ratios were ${describeRatios(runs.ratios)}; each run: ${p99.note ?? ''}`,
    },
    p50,
    delivery,
  ];
}

/**
 * The rows every live-update scenario reports for its side-by-side segments: p99 callback→client against the
 * baseline, p50, and delivery (every update arrived, and no callback failed on the way in).
 */
export function liveUpdateRows(
  g: StepResult | undefined,
  b: StepResult | undefined,
  options: LiveRowsOptions,
): ResultRow[] {
  const { scenario, rate, segments, segmentMs, gatewayGc, maxP99Ms } = options;
  return [
    ratioRow(
      {
        scenario,
        metric: `p99 callback→client @${rate}/s, ${options.subscribers}`,
        unit: 'ms',
        gateway: g?.latency.p99 ?? null,
        baseline: b?.latency.p99 ?? null,
        target: `≤ ${options.maxRatio}x${maxP99Ms === undefined ? '' : ` and < ${maxP99Ms} ms`}`,
        note:
          g && b
            ? `${segments} alternating segments of ${segmentMs / 1000} s per side; the callback's own answer took p99 ${g.answer.p99.toFixed(1)} ms on the gateway and ${b.answer.p99.toFixed(1)} ms on the baseline${gatewayGc ? `; gateway GC: ${describeGc(gatewayGc)}` : ''}`
            : undefined,
      },
      maxP99Ms === undefined
        ? { atMost: options.maxRatio }
        : { atMost: options.maxRatio, also: (g?.latency.p99 ?? Number.POSITIVE_INFINITY) < maxP99Ms },
    ),
    {
      // The median is the steadier figure: p99 follows the tail of Postgres commits on both sides.
      scenario,
      metric: `p50 @${rate}/s`,
      unit: 'ms',
      gateway: g?.latency.p50 ?? null,
      baseline: b?.latency.p50 ?? null,
      ratio: g && b ? g.latency.p50 / b.latency.p50 : null,
      target: '',
      pass: null,
    },
    {
      scenario,
      metric: `delivery @${rate}/s`,
      unit: '%',
      gateway: g ? g.delivery * 100 : null,
      baseline: b ? b.delivery * 100 : null,
      ratio: null,
      target: '100%',
      pass: g?.delivery === 1 && g.failedCallbacks === 0,
      note: g?.firstError ? `gateway: ${g.failedCallbacks} callbacks failed (${g.firstError})` : undefined,
    },
  ];
}
