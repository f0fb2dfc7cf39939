import { CallbackDriver, DeliveryClock, type StepResult, withoutSamples } from '../lib/callback-steps.js';
import type { ServerProcess } from '../lib/processes.js';
import { seededRandom } from '../lib/stats.js';
import { openFileLimit, planSubscribers, type SubscriberPlan } from '../lib/subscriber-plan.js';
import { openWorkerSubscribers } from '../lib/subscriber-workers.js';
import { openWsSubscribers } from '../lib/ws-subscribers.js';
import { type ResultRow, ratioRow, type Scenario, type ScenarioContext } from './types.js';

/**
 * 50,000 idle graphql-ws subscriptions on one gateway instance, against the raw `ws` baseline on the same
 * sockets. The server cannot hold a socket per subscription: its open-file limit (20,000 on the machines this
 * runs on, and not raisable) minus room for the database pool and files gives the sockets, and graphql-ws
 * multiplexes the subscriptions over them (3 per socket at 20,000). The load generator's sockets live in child
 * processes (each has its own limit) and come from several 127.0.0.x source addresses, so no (source,
 * destination) pair runs out of ephemeral ports.
 *
 * Measured per side: heap per idle subscription after a full collection in the server, the time to accept
 * them all, and callback→client latency at a trickle (20 signed callbacks a second, each for a different
 * subscribed task drawn at random) while all of them stay subscribed.
 */

const FULL_COUNT = 50_000;
const QUICK_COUNT = 2_000;
const RATE = 20;
const MAX_P99_MS = 50;
const HEAP_RATIO = 1.5;
/** 127.0.0.2 … 127.0.0.9: eight source addresses, each with its own ~28,000 ephemeral ports. */
const SOURCE_ADDRESSES = Array.from({ length: 8 }, (_, index) => `127.0.0.${index + 2}`);
/** Sockets one load-generator child holds, well inside its own open-file limit. */
const SOCKETS_PER_WORKER = 6_000;
/** Subscriptions set up at once, all children together. */
const CONCURRENCY = 300;
/** The warm-up's own tasks and subscribers (not counted, not measured). */
const WARMUP_COUNT = 200;
/** A quick run's warm-up: CI's quick bench has 45 s for both sides. */
const QUICK_WARMUP_COUNT = 60;
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface IdleSide {
  subscribed: number;
  sockets: number;
  errors: string[];
  acceptSeconds: number;
  startHeap: number;
  subscribedHeap: number;
  bytesPerSubscription: number;
  step: StepResult | undefined;
}

/** The same tasks in a seeded random order: consecutive callbacks go to unrelated subscriptions. */
function shuffled<T>(items: readonly T[], seed: number): T[] {
  const random = seededRandom(seed);
  const copy = [...items];
  for (let index = copy.length - 1; index > 0; index--) {
    const other = Math.floor(random() * (index + 1));
    [copy[index], copy[other]] = [copy[other] as T, copy[index] as T];
  }
  return copy;
}

async function measureSide(
  context: ScenarioContext,
  label: string,
  start: () => Promise<ServerProcess>,
  plan: SubscriberPlan,
  warmup: SubscriberPlan,
): Promise<IdleSide> {
  const { quick } = context;
  const settleMs = quick ? 500 : 1_500;
  await context.database.truncate();
  await context.database.seed([...plan.tasks, ...warmup.tasks]);
  const server = await start();
  const wsUrl = `${server.url.replace(/^http/, 'ws')}/graphql`;
  try {
    // A warm-up on tasks of its own, as in the memory scenario: what stays (compiled code, caches, prepared
    // statements, pooled connections) is not per subscription.
    const warmupClock = new DeliveryClock(warmup.tasks);
    const warming = await openWsSubscribers({
      wsUrl,
      subscribers: warmup.subscribers,
      onUpdate: (update, at) => warmupClock.received(update.id, update.version, at),
      concurrency: 100,
    });
    const warmupDriver = new CallbackDriver(server, warmup.tasks, warmupClock, () => {});
    await warmupDriver.step(100, (warmup.tasks.length / 100) * 1000, Number.POSITIVE_INFINITY);
    await warming.close();
    await pause(settleMs);
    const startHeap = (await server.gc()).heapUsed;
    if (context.profile) context.log(`${label}: heap snapshot ${await server.heapSnapshot('idle-start')}`);

    const order = shuffled(plan.tasks, 12);
    const clock = new DeliveryClock(order);
    const subscribers = await openWorkerSubscribers({
      wsUrl,
      subscribers: plan.subscribers,
      workers: Math.ceil(plan.subscribers.length / plan.perSocket / SOCKETS_PER_WORKER),
      localAddresses: SOURCE_ADDRESSES,
      onUpdate: (update, at) => clock.received(update.id, update.version, at),
      concurrency: CONCURRENCY,
      snapshotTimeoutMs: 30_000,
      openTimeoutMs: quick ? 20_000 : 120_000,
    });
    try {
      context.log(
        `${label}: ${subscribers.ready}/${plan.subscribers.length} subscribed on ${subscribers.sockets} sockets in ${subscribers.openSeconds.toFixed(1)} s${subscribers.errors.length ? ` (${subscribers.errors.join('; ')})` : ''}`,
      );
      await pause(settleMs);
      const subscribedHeap = (await server.gc()).heapUsed;
      if (context.profile)
        context.log(`${label}: heap snapshot ${await server.heapSnapshot('idle-subscribed')}`);
      const driver = new CallbackDriver(server, order, clock, (message) =>
        context.log(`${label} ${message}`),
      );
      const step =
        subscribers.ready === plan.subscribers.length
          ? await driver.step(RATE, quick ? 3_000 : 20_000, MAX_P99_MS)
          : undefined;
      const side: IdleSide = {
        subscribed: subscribers.ready,
        sockets: subscribers.sockets,
        errors: subscribers.errors,
        acceptSeconds: subscribers.openSeconds,
        startHeap,
        subscribedHeap,
        bytesPerSubscription: (subscribedHeap - startHeap) / Math.max(1, subscribers.ready),
        step,
      };
      const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MB`;
      context.log(
        `${label}: heap ${mb(startHeap)} → ${mb(subscribedHeap)}, ${side.bytesPerSubscription.toFixed(0)} B per subscription`,
      );
      return side;
    } finally {
      await subscribers.close();
    }
  } finally {
    await server.stop();
  }
}

export const idleSubscribersScenario: Scenario = {
  name: 'idle-subscribers',
  async run(context) {
    const count = context.quick ? QUICK_COUNT : FULL_COUNT;
    const limit = openFileLimit();
    // The server holds every socket at once; the plan fits the full count into its open-file limit, and a
    // quick run keeps that layout (subscriptions per socket) with fewer of them, so its ratio says the same.
    const plan = await planSubscribers('idle', count, FULL_COUNT);
    const warmup = await planSubscribers(
      'idlew',
      context.quick ? QUICK_WARMUP_COUNT : WARMUP_COUNT,
      FULL_COUNT,
    );
    const gateway = await measureSide(context, 'gateway', () => context.startGateway(), plan, warmup);
    const baseline = await measureSide(
      context,
      'baseline',
      () => context.startBaseline('live', { DATABASE_URL: context.database.url }),
      plan,
      warmup,
    );
    const sockets = gateway.sockets;
    const layout = `${count.toLocaleString('en-US')} subscriptions on ${sockets.toLocaleString('en-US')} sockets${plan.perSocket > 1 ? ` (${plan.perSocket} per socket, open-file limit ${limit.toLocaleString('en-US')})` : ''}`;
    const allIn = (side: IdleSide) => side.subscribed === count;
    const missing = (side: IdleSide, name: string) =>
      allIn(side)
        ? []
        : [`${name}: only ${side.subscribed} of ${count} subscribed (${side.errors.join('; ')})`];
    const shortfall =
      [...missing(gateway, 'gateway'), ...missing(baseline, 'baseline')].join('; ') || undefined;
    const g = gateway.step;
    const b = baseline.step;
    const stepSeconds = context.quick ? 3 : 20;
    const rows: ResultRow[] = [
      ratioRow(
        {
          scenario: 'idle-subscribers',
          metric: `heap per idle subscription, ${layout}`,
          unit: 'B',
          gateway: gateway.bytesPerSubscription,
          baseline: baseline.bytesPerSubscription,
          target: `≤ ${HEAP_RATIO}x`,
          note: shortfall,
        },
        { atMost: HEAP_RATIO, also: allIn(gateway) },
      ),
      {
        ...ratioRow(
          {
            scenario: 'idle-subscribers',
            metric: `time to accept all ${count.toLocaleString('en-US')} subscriptions`,
            unit: 's',
            gateway: gateway.acceptSeconds,
            baseline: baseline.acceptSeconds,
            target: '',
            note: `${CONCURRENCY} set up at once, from ${SOURCE_ADDRESSES.length} source addresses`,
          },
          {},
        ),
        pass: null,
      },
      {
        ...ratioRow(
          {
            scenario: 'idle-subscribers',
            metric: `p99 callback→client @${RATE}/s, random subscribed tasks, all ${count.toLocaleString('en-US')} subscribed`,
            unit: 'ms',
            gateway: g?.latency.p99 ?? null,
            baseline: b?.latency.p99 ?? null,
            target: `< ${MAX_P99_MS} ms`,
            note: g
              ? `${g.sent} callbacks over ${stepSeconds} s; gateway cpu ${(g.cpu * 100).toFixed(0)}%`
              : undefined,
          },
          {},
        ),
        pass: g !== undefined && g.latency.p99 < MAX_P99_MS,
      },
      {
        ...ratioRow(
          {
            scenario: 'idle-subscribers',
            metric: `p50 @${RATE}/s`,
            unit: 'ms',
            gateway: g?.latency.p50 ?? null,
            baseline: b?.latency.p50 ?? null,
            target: '',
          },
          {},
        ),
        pass: null,
      },
      {
        scenario: 'idle-subscribers',
        metric: `delivery @${RATE}/s`,
        unit: '%',
        gateway: g ? g.delivery * 100 : null,
        baseline: b ? b.delivery * 100 : null,
        ratio: null,
        target: '100%',
        pass: g !== undefined && g.delivery === 1 && g.failedCallbacks === 0,
        note:
          g && g.failedCallbacks > 0 ? `${g.failedCallbacks} callbacks failed: ${g.firstError}` : undefined,
      },
    ];
    const strip = ({ step, ...side }: IdleSide) => ({ ...side, step: step && withoutSamples(step) });
    return {
      rows,
      details: {
        subscriptions: count,
        sockets,
        perSocket: plan.perSocket,
        openFileLimit: limit,
        sourceAddresses: SOURCE_ADDRESSES,
        gateway: strip(gateway),
        baseline: strip(baseline),
      },
    };
  },
};
