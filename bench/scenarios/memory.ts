import { CallbackDriver, DeliveryClock } from '../lib/callback-steps.js';
import type { ServerProcess } from '../lib/processes.js';
import { planSubscribers } from '../lib/subscriber-plan.js';
import { openWsSubscribers } from '../lib/ws-subscribers.js';
import { ratioRow, type Scenario, type ScenarioContext } from './types.js';

/**
 * 10,000 idle graphql-ws subscriptions: heap per subscription after a full collection (twice, in the server's
 * own process), against a raw `ws` server keeping one map entry per subscription on the same sockets. Then
 * every task gets one update and the heap is measured again: what a subscription keeps of an update it already
 * sent lives until the next one, which is also garbage the collector must promote and later mark. Last, every
 * subscriber disconnects and the heap must come back to where it started.
 */

/** After disconnect, the heap may stay this share of the subscriptions' growth above the start. */
const TOLERANCE = 0.1;
const SETTLE_MS = 1_500;
const QUICK_SETTLE_MS = 500;
/** Callbacks per second in the update round (and its warm-up), a rate both sides hold. */
const UPDATE_RATE = 1_000;

interface MemorySide {
  subscribed: number;
  errors: string[];
  start: NodeJS.MemoryUsage;
  subscribedMemory: NodeJS.MemoryUsage;
  updatedMemory: NodeJS.MemoryUsage;
  /** Updates delivered in the update round (one per task). */
  delivered: number;
  after: NodeJS.MemoryUsage;
  bytesPerSubscription: number;
  bytesPerUpdatedSubscription: number;
  residualBytes: number;
  recovered: boolean;
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function measureSide(
  context: ScenarioContext,
  start: () => Promise<ServerProcess>,
  plan: Awaited<ReturnType<typeof planSubscribers>>,
  label: string,
): Promise<MemorySide> {
  await context.database.truncate();
  await context.database.seed(plan.tasks);
  const server = await start();
  const settleMs = context.quick ? QUICK_SETTLE_MS : SETTLE_MS;
  const settle = (ms = settleMs) => pause(ms);
  const clock = new DeliveryClock(plan.tasks);
  const open = (subscribers: typeof plan.subscribers) =>
    openWsSubscribers({
      wsUrl: `${server.url.replace(/^http/, 'ws')}/graphql`,
      subscribers,
      onUpdate: (update, at) => clock.received(update.id, update.version, at),
      concurrency: 200,
    });
  const driver = new CallbackDriver(server, plan.tasks, clock, (message) =>
    context.log(`${label} ${message}`),
  );
  try {
    // A first round of subscribers that get updates at the update round's rate and leave again: what stays
    // (compiled code, caches, prepared statements, pooled and keep-alive connections) is not per subscription,
    // and must not count as such nor as a leak. The warm-up's updates go to its own subscribers' tasks; the
    // update round below goes on from there, so it still gives every task exactly one update.
    const warmupCount = Math.min(200, plan.subscribers.length);
    const warmup = await open(plan.subscribers.slice(0, warmupCount));
    await driver.step(UPDATE_RATE, (warmupCount / UPDATE_RATE) * 1000, Number.POSITIVE_INFINITY);
    await warmup.close();
    await settle();
    const startMemory = await server.gc();
    if (context.profile) context.log(`${label}: heap snapshot ${await server.heapSnapshot('idle')}`);
    const subscribers = await open(plan.subscribers);
    await settle();
    const subscribedMemory = await server.gc();
    if (context.profile) context.log(`${label}: heap snapshot ${await server.heapSnapshot('subscribed')}`);
    // One update for every task, then the same collection.
    const round = await driver.step(
      UPDATE_RATE,
      (plan.tasks.length / UPDATE_RATE) * 1000,
      Number.POSITIVE_INFINITY,
    );
    await settle();
    const updatedMemory = await server.gc();
    if (context.profile) context.log(`${label}: heap snapshot ${await server.heapSnapshot('updated')}`);
    await subscribers.close();
    await settle(settleMs * 2);
    const after = await server.gc();
    if (context.profile) context.log(`${label}: heap snapshot ${await server.heapSnapshot('after')}`);
    const growth = subscribedMemory.heapUsed - startMemory.heapUsed;
    const residual = after.heapUsed - startMemory.heapUsed;
    const side: MemorySide = {
      subscribed: subscribers.ready,
      errors: subscribers.errors.slice(0, 5),
      start: startMemory,
      subscribedMemory,
      updatedMemory,
      delivered: round?.delivered ?? 0,
      after,
      bytesPerSubscription: growth / Math.max(1, subscribers.ready),
      bytesPerUpdatedSubscription:
        (updatedMemory.heapUsed - startMemory.heapUsed) / Math.max(1, subscribers.ready),
      residualBytes: residual,
      recovered: residual <= Math.max(growth * TOLERANCE, 0),
    };
    const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MB`;
    context.log(
      `${label}: ${subscribers.ready} subscribed; heap ${mb(startMemory.heapUsed)} → ${mb(subscribedMemory.heapUsed)} → ${mb(updatedMemory.heapUsed)} after one update each (${side.delivered} delivered) → ${mb(after.heapUsed)} after disconnect; ${side.bytesPerSubscription.toFixed(0)} B per subscription, ${side.bytesPerUpdatedSubscription.toFixed(0)} B once updated`,
    );
    return side;
  } finally {
    await server.stop();
  }
}

export const memoryScenario: Scenario = {
  name: 'memory',
  async run(context) {
    const count = context.quick ? 500 : 10_000;
    const plan = await planSubscribers('mem', count);
    const gateway = await measureSide(context, () => context.startGateway(), plan, 'gateway');
    const baseline = await measureSide(context, () => context.startBaseline('live'), plan, 'baseline');
    const growth = gateway.subscribedMemory.heapUsed - gateway.start.heapUsed;
    return {
      rows: [
        ratioRow(
          {
            scenario: 'memory',
            metric: `heap per idle subscription, ${count.toLocaleString('en-US')}${plan.perSocket > 1 ? `, ${plan.perSocket} per socket` : ' sockets'}`,
            unit: 'B',
            gateway: gateway.bytesPerSubscription,
            baseline: baseline.bytesPerSubscription,
            target: '≤ 2x',
            note:
              gateway.subscribed < count
                ? `only ${gateway.subscribed} of ${count} subscribed: ${gateway.errors.join('; ')}`
                : undefined,
          },
          { atMost: 2, also: gateway.subscribed === count },
        ),
        {
          scenario: 'memory',
          metric: 'heap per subscription after one update each',
          unit: 'B',
          gateway: gateway.bytesPerUpdatedSubscription,
          baseline: baseline.bytesPerUpdatedSubscription,
          ratio: gateway.bytesPerUpdatedSubscription / baseline.bytesPerUpdatedSubscription,
          target: '',
          pass: null,
          note: `${gateway.delivered} and ${baseline.delivered} of ${count} updates delivered`,
        },
        {
          scenario: 'memory',
          metric: 'heap left after all disconnect',
          unit: 'MB',
          gateway: gateway.residualBytes / 2 ** 20,
          baseline: baseline.residualBytes / 2 ** 20,
          ratio: null,
          target: `≤ ${TOLERANCE * 100}% of the growth (${((growth * TOLERANCE) / 2 ** 20).toFixed(1)} MB)`,
          pass: gateway.recovered,
        },
      ],
      details: { subscribers: count, perSocket: plan.perSocket, gateway, baseline },
    };
  },
};
