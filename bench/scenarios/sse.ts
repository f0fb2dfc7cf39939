import {
  CallbackDriver,
  DeliveryClock,
  pooled,
  type StepResult,
  withoutSamples,
} from '../lib/callback-steps.js';
import { describeGc, type GcStats } from '../lib/child.js';
import type { ServerProcess } from '../lib/processes.js';
import { openSseSubscribers, type SseSubscribers } from '../lib/sse-subscribers.js';
import { planSubscribers, type SubscriberPlan } from '../lib/subscriber-plan.js';
import { ratioRow, type Scenario, type ScenarioContext } from './types.js';

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
  const clock = new DeliveryClock(plan.tasks);
  const subscribers = await openSseSubscribers({
    url: `${server.url}/graphql`,
    subscribers: plan.subscribers,
    onUpdate: (update, at) => clock.received(update.id, update.version, at),
  });
  context.log(`${label}: ${subscribers.ready}/${plan.tasks.length} SSE subscribers`);
  if (subscribers.ready < plan.tasks.length) {
    subscribers.close();
    throw new Error(
      `${label}: only ${subscribers.ready} subscribed (${subscribers.errors.slice(0, 3).join('; ')})`,
    );
  }
  const driver = new CallbackDriver(server, plan.tasks, clock, (message) =>
    context.log(`${label} ${message}`),
  );
  return { subscribers, driver, segments: [] };
}

export const sseScenario: Scenario = {
  name: 'sse',
  async run(context) {
    const count = context.quick ? 200 : 2_000;
    const segments = context.quick ? 2 : 5;
    const segmentMs = context.quick ? 500 : 2_000;
    // SSE has no multiplexing: one connection per subscriber, on both sides at once.
    const gatewayPlan = await planSubscribers('sse', count);
    const baselinePlan = await planSubscribers('sseb', count);
    await context.database.seed([...gatewayPlan.tasks, ...baselinePlan.tasks]);
    const gatewayServer = await context.startGateway();
    const baselineServer = await context.startBaseline('live', { DATABASE_URL: context.database.url });
    const sides: Side[] = [];
    try {
      const gateway = await openSide(context, 'gateway', gatewayServer, gatewayPlan);
      sides.push(gateway);
      const baseline = await openSide(context, 'baseline', baselineServer, baselinePlan);
      sides.push(baseline);
      await gateway.driver.warmUp(segmentMs);
      await baseline.driver.warmUp(segmentMs);
      for (let segment = 0; segment < segments; segment++) {
        const order = segment % 2 === 0 ? [gateway, baseline] : [baseline, gateway];
        for (const side of order) {
          const step = await side.driver.step(RATE, segmentMs, Number.POSITIVE_INFINITY);
          if (step) side.segments.push(step);
        }
      }
      const g = pooled(gateway.segments, Number.POSITIVE_INFINITY);
      const b = pooled(baseline.segments, Number.POSITIVE_INFINITY);
      const gatewayGc = (await gatewayServer.stats<{ gc: GcStats }>()).gc;
      const baselineGc = (await baselineServer.stats<{ gc: GcStats }>()).gc;
      context.log(`GC during the run: gateway ${describeGc(gatewayGc)}; baseline ${describeGc(baselineGc)}`);
      return {
        rows: [
          ratioRow(
            {
              scenario: 'sse',
              metric: `p99 callback→client @${RATE}/s, ${count.toLocaleString('en-US')} subscribers`,
              unit: 'ms',
              gateway: g?.latency.p99 ?? null,
              baseline: b?.latency.p99 ?? null,
              target: '≤ 2x',
              note:
                g && b
                  ? `${segments} alternating segments of ${segmentMs / 1000} s per side; the callback's own answer took p99 ${g.answer.p99.toFixed(1)} ms on the gateway and ${b.answer.p99.toFixed(1)} ms on the baseline; gateway GC: ${describeGc(gatewayGc)}`
                  : undefined,
            },
            { atMost: 2 },
          ),
          {
            scenario: 'sse',
            metric: `p50 @${RATE}/s`,
            unit: 'ms',
            gateway: g?.latency.p50 ?? null,
            baseline: b?.latency.p50 ?? null,
            ratio: g && b ? g.latency.p50 / b.latency.p50 : null,
            target: '',
            pass: null,
          },
          {
            scenario: 'sse',
            metric: `delivery @${RATE}/s`,
            unit: '%',
            gateway: g ? g.delivery * 100 : null,
            baseline: b ? b.delivery * 100 : null,
            ratio: null,
            target: '100%',
            pass: g?.delivery === 1 && g.failedCallbacks === 0,
            note: g?.firstError
              ? `gateway: ${g.failedCallbacks} callbacks failed (${g.firstError})`
              : undefined,
          },
        ],
        details: {
          subscribers: count,
          segmentMs,
          gc: { gateway: gatewayGc, baseline: baselineGc },
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
