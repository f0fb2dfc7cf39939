import { callbackBody, callbackPath, type KieState, signatureHeaders } from './callback.js';
import type { SeedTask } from './database.js';
import { resultUrl } from './database.js';
import { httpRequest } from './http.js';
import { openLoop } from './load.js';
import { cpuShare, type ServerProcess } from './processes.js';
import { type Summary, summarize } from './stats.js';

/**
 * Drives kie callbacks at steady rates and times each one from the moment it was sent to the moment its
 * subscriber received the new version. Event k goes to task k mod N, so consecutive events hit different
 * tasks, and each task walks queuing → generating → success (versions 3, 4, 5): kie only sends the terminal
 * callback, but a progress callback takes the same path through the gateway, and it lets 10,000 tasks carry
 * 30,000 events.
 */

const STAGES: KieState[] = ['queuing', 'generating', 'success'];
const FIRST_VERSION = 3;
/** A step's stragglers may arrive this long after its last callback was sent. */
const GRACE_MS = 3_000;

export interface StepResult {
  rate: number;
  sent: number;
  delivered: number;
  /** Share of the step's updates that reached their subscriber. */
  delivery: number;
  latency: Summary;
  /** The raw callback→client latencies, for pooling steps. */
  latencies: number[];
  /** How long the server took to answer the callbacks themselves. */
  answer: Summary;
  answers: number[];
  achievedRate: number;
  saturated: boolean;
  failedCallbacks: number;
  firstError: string | undefined;
  /** Share of its core the server used during the step. */
  cpu: number;
  holds: boolean;
}

export class DeliveryClock {
  private readonly sentAt = new Map<number, number>();
  private latencies: number[] = [];
  private delivered = 0;
  private readonly index = new Map<string, number>();

  constructor(tasks: readonly SeedTask[]) {
    for (const [position, task] of tasks.entries()) this.index.set(task.globalId, position);
  }

  private key(position: number, version: number): number {
    return position * 16 + version;
  }

  sent(position: number, version: number, at: number): void {
    this.sentAt.set(this.key(position, version), at);
  }

  /** Called by the subscribers for every update they get. */
  received(globalId: string, version: number, at: number): void {
    const position = this.index.get(globalId);
    if (position === undefined) return;
    const key = this.key(position, version);
    const sentAt = this.sentAt.get(key);
    if (sentAt === undefined) return;
    this.sentAt.delete(key);
    this.delivered++;
    this.latencies.push(at - sentAt);
  }

  /** What arrived since the last call. */
  take(): { delivered: number; latencies: number[] } {
    const taken = { delivered: this.delivered, latencies: this.latencies };
    this.delivered = 0;
    this.latencies = [];
    return taken;
  }

  get outstanding(): number {
    return this.sentAt.size;
  }

  /** Gives up on what has not arrived, so a later step does not count it. */
  forgetOutstanding(): void {
    this.sentAt.clear();
  }
}

/**
 * Sends one side's callbacks, step by step, walking through its tasks' events; a side can take several steps,
 * interleaved with another side's, and each continues where it left off.
 */
export class CallbackDriver {
  private next = 0;

  constructor(
    private readonly server: ServerProcess,
    private readonly tasks: readonly SeedTask[],
    readonly clock: DeliveryClock,
    private readonly log: (message: string) => void,
  ) {}

  /** One step at `rate` for `stepMs`; undefined when the tasks have no events left for a step of a second. */
  async step(rate: number, stepMs: number, maxP99Ms: number): Promise<StepResult | undefined> {
    const { server, tasks, clock } = this;
    const wanted = Math.round((rate * stepMs) / 1000);
    const count = Math.min(wanted, tasks.length * STAGES.length - this.next);
    // A step cut short by the budget says little about a rate unless it still lasts a second.
    if (count < Math.min(wanted, rate)) return undefined;
    const first = this.next;
    this.next += count;
    const before = await server.cpu();
    const answers: number[] = [];
    const sending = await openLoop({
      rate,
      count,
      maxInFlight: 512,
      send: async (offset) => {
        const event = first + offset;
        const position = event % tasks.length;
        const stage = Math.floor(event / tasks.length);
        const task = tasks[position] as SeedTask;
        const state = STAGES[stage] as KieState;
        const body = callbackBody(task.upstreamTaskId, state, resultUrl(task.upstreamTaskId));
        const at = performance.now();
        clock.sent(position, FIRST_VERSION + stage, at);
        const answer = await httpRequest(
          'POST',
          `${server.url}${callbackPath(task.id, task.callbackSecret)}`,
          body,
          signatureHeaders(task.upstreamTaskId),
        );
        answers.push(performance.now() - at);
        if (answer.status !== 200)
          throw new Error(`callback answered ${answer.status}: ${answer.body.slice(0, 120)}`);
        return true;
      },
    });
    const graceEnd = performance.now() + GRACE_MS;
    while (clock.outstanding > 0 && performance.now() < graceEnd) await new Promise((r) => setTimeout(r, 20));
    const after = await server.cpu();
    const { delivered, latencies } = clock.take();
    // Anything still outstanding is lost for this step.
    clock.forgetOutstanding();
    const latency = summarize(latencies);
    const answer = summarize(answers);
    const cpu = cpuShare(before, after);
    const holds = delivered === count && latency.p99 < maxP99Ms && !sending.saturated && sending.failed === 0;
    this.log(
      `${rate}/s: delivered ${delivered}/${count}, p50 ${latency.p50.toFixed(1)} ms, p99 ${latency.p99.toFixed(1)} ms (callback answered p99 ${answer.p99.toFixed(1)} ms), cpu ${(cpu * 100).toFixed(0)}%, loop stalled up to ${after.loopDelayMaxMs.toFixed(0)} ms, ${after.majorGcs} major GC${sending.failed ? `, ${sending.failed} callbacks failed (${sending.firstError})` : ''}${holds ? '' : ' — does not hold'}`,
    );
    return {
      rate,
      sent: count,
      delivered,
      delivery: delivered / count,
      latency,
      latencies,
      answer,
      answers,
      achievedRate: sending.achievedRate,
      saturated: sending.saturated,
      failedCallbacks: sending.failed,
      firstError: sending.firstError,
      cpu,
      holds,
    };
  }

  /** A short step at a low rate that is not reported: JIT, pools, caches. */
  async warmUp(stepMs: number): Promise<void> {
    await this.step(100, stepMs, Number.POSITIVE_INFINITY);
  }
}

/** Subscribers that report each update they receive, as the graphql-ws and SSE clients do. */
export interface LiveSubscribers {
  ready: number;
  errors: string[];
  close(): unknown;
}

/**
 * One side of a live-update scenario: its subscribers, every update they receive timed by a delivery clock,
 * and a driver for its callbacks. Unless every subscriber got in, closes them and throws.
 */
export async function openLiveSide<S extends LiveSubscribers>(options: {
  label: string;
  server: ServerProcess;
  tasks: readonly SeedTask[];
  log: (message: string) => void;
  open: (onUpdate: (update: { id: string; version: number }, at: number) => void) => Promise<S>;
}): Promise<{ subscribers: S; driver: CallbackDriver; setupSeconds: number }> {
  const { label, server, tasks, log } = options;
  const clock = new DeliveryClock(tasks);
  const begin = performance.now();
  const subscribers = await options.open((update, at) => clock.received(update.id, update.version, at));
  const setupSeconds = (performance.now() - begin) / 1000;
  log(`${label}: ${subscribers.ready}/${tasks.length} subscribed in ${setupSeconds.toFixed(1)} s`);
  if (subscribers.ready < tasks.length) {
    await subscribers.close();
    throw new Error(
      `${label}: only ${subscribers.ready} subscribed (${subscribers.errors.slice(0, 3).join('; ')})`,
    );
  }
  const driver = new CallbackDriver(server, tasks, clock, (message) => log(`${label} ${message}`));
  return { subscribers, driver, setupSeconds };
}

/** Steps up through `rates` until one does not hold (loses an update, or p99 reaches `maxP99Ms`). */
export async function climb(
  driver: CallbackDriver,
  rates: readonly number[],
  stepMs: number,
  maxP99Ms: number,
) {
  const steps: StepResult[] = [];
  for (const rate of rates) {
    const step = await driver.step(rate, stepMs, maxP99Ms);
    if (!step) break;
    steps.push(step);
    if (!step.holds) break;
  }
  return steps;
}

/** Several steps at one rate as one: all their samples pooled. */
export function pooled(steps: readonly StepResult[], maxP99Ms: number): StepResult | undefined {
  const first = steps[0];
  if (!first) return undefined;
  const latencies = steps.flatMap((step) => step.latencies);
  const sent = steps.reduce((sum, step) => sum + step.sent, 0);
  const delivered = steps.reduce((sum, step) => sum + step.delivered, 0);
  const latency = summarize(latencies);
  const failedCallbacks = steps.reduce((sum, step) => sum + step.failedCallbacks, 0);
  const saturated = steps.some((step) => step.saturated);
  return {
    rate: first.rate,
    sent,
    delivered,
    delivery: delivered / sent,
    latency,
    latencies,
    answer: summarize(steps.flatMap((step) => step.answers)),
    answers: steps.flatMap((step) => step.answers),
    achievedRate: steps.reduce((sum, step) => sum + step.achievedRate, 0) / steps.length,
    saturated,
    failedCallbacks,
    firstError: steps.find((step) => step.firstError)?.firstError,
    cpu: steps.reduce((sum, step) => sum + step.cpu, 0) / steps.length,
    holds: delivered === sent && latency.p99 < maxP99Ms && !saturated && failedCallbacks === 0,
  };
}

/** A step without its raw samples, for the JSON file. */
export function withoutSamples({ latencies: _latencies, answers: _answers, ...step }: StepResult) {
  return step;
}
