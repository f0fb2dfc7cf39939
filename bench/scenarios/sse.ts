import { type CallbackDriver, openLiveSide, type StepResult, withoutSamples } from '../lib/callback-steps.js';
import { describeGc, type GcStats } from '../lib/child.js';
import { NO_RESULT_COPIES } from '../lib/database.js';
import type { ServerProcess } from '../lib/processes.js';
import { alternatingRuns } from '../lib/runs.js';
import { openSseSubscribers, type SseSubscribers } from '../lib/sse-subscribers.js';
import { planSubscribers, type SubscriberPlan } from '../lib/subscriber-plan.js';
import { liveUpdateRunRows } from './live-rows.js';
import type { Scenario, ScenarioContext } from './types.js';

/**
 * 2,000 SSE subscribers (fetch reading text/event-stream), one task each, kie callbacks at 200/s; against a raw
 * text/event-stream writer doing the same database work by hand. Both hold their subscribers at once and take
 * turns in short segments, so a slow second of Postgres hits both alike.
 */

const RATE = 200;

interface Side {
  subscribers: SseSubscribers;
  driver: CallbackDriver;
  segments: StepResult[];
}

async function openSide(
  context: ScenarioContext,
  label: string,
  server: ServerProcess,
  plan: SubscriberPlan,
): Promise<Side> {
  const side = await openLiveSide({
    label,
    server,
    tasks: plan.tasks,
    log: context.log,
    open: (onUpdate) =>
      openSseSubscribers({ url: `${server.url}/graphql`, subscribers: plan.subscribers, onUpdate }),
  });
  return { ...side, segments: [] };
}

export const sseScenario: Scenario = {
  name: 'sse',
  async run(context) {
    const count = context.quick ? 200 : 2_000;
    // Three runs in a full run (the median reported, see bench/lib/runs.ts) of four segments each: 2,000 tasks
    // carry 6,000 events, and three runs of five would leave none for the warm-up.
    const runs = context.quick ? 1 : 3;
    const segments = context.quick ? 2 : 4;
    const segmentMs = context.quick ? 500 : 2_000;
    // SSE has no multiplexing: one connection per subscriber, on both sides at once.
    const gatewayPlan = await planSubscribers('sse', count);
    const baselinePlan = await planSubscribers('sseb', count);
    await context.database.seed([...gatewayPlan.tasks, ...baselinePlan.tasks]);
    const gatewayServer = await context.startGateway(NO_RESULT_COPIES);
    const baselineServer = await context.startBaseline('live', { DATABASE_URL: context.database.url });
    const sides: Side[] = [];
    try {
      // With --profile: what an open stream holds, by `bench/heap-summary.ts <idle> <subscribed> <count>`.
      if (context.profile) context.log(`heap snapshot ${await gatewayServer.heapSnapshot('sse-idle')}`);
      const gateway = await openSide(context, 'gateway', gatewayServer, gatewayPlan);
      sides.push(gateway);
      if (context.profile) context.log(`heap snapshot ${await gatewayServer.heapSnapshot('sse-subscribed')}`);
      const baseline = await openSide(context, 'baseline', baselineServer, baselinePlan);
      sides.push(baseline);
      await gateway.driver.warmUp(segmentMs / 2);
      await baseline.driver.warmUp(segmentMs / 2);
      const compared = await alternatingRuns(gateway, baseline, {
        runs,
        segments,
        segmentMs,
        rate: RATE,
        maxP99Ms: Number.POSITIVE_INFINITY,
      });
      const g = compared.median.gateway;
      const b = compared.median.baseline;
      const gatewayGc = (await gatewayServer.stats<{ gc: GcStats }>()).gc;
      const baselineGc = (await baselineServer.stats<{ gc: GcStats }>()).gc;
      context.log(`GC during the run: gateway ${describeGc(gatewayGc)}; baseline ${describeGc(baselineGc)}`);
      // What an open stream holds: the heap with the streams and without, after full collections. Measured
      // last, because a forced collection lowers the heap limit and brings the next major one sooner.
      const [gatewayBytes, baselineBytes] = await Promise.all(
        [gatewayServer, baselineServer].map(async (server, index) => {
          const withStreams = (await server.gc()).heapUsed;
          sides[index]?.subscribers.close();
          await new Promise((resolve) => setTimeout(resolve, context.quick ? 500 : 1_500));
          return (withStreams - (await server.gc()).heapUsed) / count;
        }),
      );
      context.log(
        `heap per open stream: gateway ${gatewayBytes?.toFixed(0)} B, baseline ${baselineBytes?.toFixed(0)} B`,
      );
      return {
        rows: [
          ...liveUpdateRunRows(compared, {
            scenario: 'sse',
            rate: RATE,
            subscribers: `${count.toLocaleString('en-US')} subscribers`,
            // Issue 12's target for SSE.
            maxRatio: 2,
            segments,
            segmentMs,
            gatewayGc,
          }),
          {
            scenario: 'sse',
            metric: 'heap per open stream',
            unit: 'B',
            gateway: gatewayBytes ?? Number.NaN,
            baseline: baselineBytes ?? Number.NaN,
            ratio: (gatewayBytes ?? Number.NaN) / (baselineBytes ?? Number.NaN),
            target: '',
            pass: null,
          },
        ],
        details: {
          subscribers: count,
          segmentMs,
          heapPerStream: { gateway: gatewayBytes, baseline: baselineBytes },
          gc: { gateway: gatewayGc, baseline: baselineGc },
          runRatios: compared.ratios,
          gateway: { at200: g && withoutSamples(g), segments: gateway.segments.map(withoutSamples) },
          baseline: { at200: b && withoutSamples(b), segments: baseline.segments.map(withoutSamples) },
        },
      };
    } finally {
      for (const side of sides) side.subscribers.close();
      await gatewayServer.stop();
      await baselineServer.stop();
    }
  },
};
