import { postJson } from '../lib/http.js';
import { openLoop } from '../lib/load.js';
import { withCpu } from '../lib/measure.js';
import { lognormal, seededRandom, summarize } from '../lib/stats.js';
import { BENCH_HMAC_KEY, signToken } from '../lib/tokens.js';
import type { ResultRow, Scenario, ScenarioContext } from './types.js';

/**
 * What the poller costs kie, on a compressed clock. Tasks are created through the gateway at a steady pace;
 * the fake kie gives each a lognormal duration, answers recordInfo by the clock, and either sends every
 * callback when the task finishes or drops them all. Measured: recordInfo queries per task, and how late the
 * final state lands, relative to the task's age when kie finished it. The ideal is one query per task.
 *
 * The clock is compressed as production's is configured: POLL_MIN_DELAY_MS (30 s there) is a quarter of the
 * median task (about 2 minutes there).
 */

const CREATE = `mutation Create($input: CreateAvatarTaskInput!) {
  createAvatarTask(input: $input) { __typename ... on CreateAvatarTaskSuccess { task { id state } } }
}`;

interface Clock {
  tasks: number;
  /** Tasks created first and not measured. */
  warmup: number;
  createSeconds: number;
  minDelayMs: number;
  medianMs: number;
  sigma: number;
}

interface ModeResult {
  mode: 'callbacks' | 'no callbacks';
  finished: number;
  queriesPerTask: number;
  latenessMs: ReturnType<typeof summarize>;
  latenessShare: ReturnType<typeof summarize>;
  withinQuarter: number;
  cpu: number;
}

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return false;
}

async function runMode(context: ScenarioContext, clock: Clock, callbacks: boolean): Promise<ModeResult> {
  const random = seededRandom(11);
  const total = clock.warmup + clock.tasks;
  const durations = Array.from({ length: total }, () =>
    Math.max(50, lognormal(random, clock.medianMs, clock.sigma)),
  );
  await context.database.truncate();
  context.kie.reset({
    durationMs: (index) => durations[index],
    callbacks: callbacks ? 'send' : 'drop',
    hmacKey: BENCH_HMAC_KEY,
  });
  const server = await context.startGateway({
    POLL_MIN_DELAY_MS: String(clock.minDelayMs),
    POLL_MAX_DELAY_MS: '300000',
    // Fine enough that the tick is not what makes a result late: well under 25% of the shortest first poll.
    POLL_INTERVAL_MS: '50',
  });
  try {
    const tokens = await Promise.all(Array.from({ length: 20 }, (_, user) => signToken(`poller-${user}`)));
    const create = (count: number) =>
      openLoop({
        rate: clock.tasks / clock.createSeconds,
        count,
        maxInFlight: 64,
        send: async (index) => {
          const answer = await postJson(
            `${server.url}/graphql`,
            {
              query: CREATE,
              variables: {
                input: {
                  imageUrl: 'https://example.com/face.png',
                  audioUrl: 'https://example.com/voice.mp3',
                },
              },
            },
            { authorization: `Bearer ${tokens[index % tokens.length]}` },
          );
          return answer.body.includes('CreateAvatarTaskSuccess');
        },
      });
    const finishedCount = async () => {
      const [row] = await context.database.sql<{ done: number }[]>`
        select count(*)::int as done from avatar_tasks where state in ('SUCCEEDED', 'FAILED')`;
      return row?.done ?? 0;
    };
    // Warm-up: the gateway has been running a while, so the poller has seen whether callbacks arrive and how
    // long tasks take. These tasks are not measured.
    const warm = await create(clock.warmup);
    if (warm.failed > 0) throw new Error(`${warm.failed} creates failed: ${warm.firstError}`);
    const settledEnough = Math.ceil(clock.warmup * 0.4);
    await waitUntil(async () => (await finishedCount()) >= settledEnough, clock.medianMs * 4);

    const longest = Math.max(...durations);
    const { result: created, cpu } = await withCpu(server, async () => {
      const sent = await create(clock.tasks);
      await waitUntil(
        async () => (await finishedCount()) >= total,
        longest * 1.5 + clock.minDelayMs + 10_000,
      );
      return sent;
    });
    if (created.failed > 0) throw new Error(`${created.failed} creates failed: ${created.firstError}`);

    const rows = await context.database.sql<{ upstream: string; completed: Date | null; state: string }[]>`
      select upstream_task_id as upstream, completed_at as completed, state from avatar_tasks`;
    const lateness: number[] = [];
    const shares: number[] = [];
    let queries = 0;
    let finished = 0;
    for (const row of rows) {
      const task = context.kie.tasks.get(row.upstream);
      if (!task || task.finishAt === undefined || task.index < clock.warmup) continue;
      queries += task.queries;
      if (!row.completed || row.state !== 'SUCCEEDED') continue;
      finished++;
      const late = Math.max(0, row.completed.getTime() - task.finishAt);
      lateness.push(late);
      shares.push(late / (task.finishAt - task.createdAt));
    }
    const result: ModeResult = {
      mode: callbacks ? 'callbacks' : 'no callbacks',
      finished,
      queriesPerTask: queries / clock.tasks,
      latenessMs: summarize(lateness),
      latenessShare: summarize(shares),
      withinQuarter: shares.filter((share) => share <= 0.25).length / Math.max(1, shares.length),
      cpu,
    };
    context.log(
      `${result.mode}: ${finished}/${clock.tasks} succeeded; ${result.queriesPerTask.toFixed(2)} queries per task; late p50 ${result.latenessMs.p50.toFixed(0)} ms, p99 ${result.latenessMs.p99.toFixed(0)} ms (${(result.latenessShare.p99 * 100).toFixed(0)}% of age); ${(result.withinQuarter * 100).toFixed(1)}% within 25%; gateway cpu ${(cpu * 100).toFixed(0)}%`,
    );
    return result;
  } finally {
    await server.stop();
  }
}

export const pollerScenario: Scenario = {
  name: 'poller',
  async run(context) {
    const clock: Clock = context.quick
      ? { tasks: 30, warmup: 16, createSeconds: 1, minDelayMs: 1_000, medianMs: 2_000, sigma: 0.3 }
      : { tasks: 500, warmup: 50, createSeconds: 5, minDelayMs: 1_000, medianMs: 4_000, sigma: 0.5 };
    const withCallbacks = await runMode(context, clock, true);
    const without = await runMode(context, clock, false);
    const label = `${clock.tasks} tasks, median ${clock.medianMs / 1000} s, first poll ${clock.minDelayMs / 1000} s`;
    const rows: ResultRow[] = [
      {
        scenario: 'poller',
        metric: `recordInfo per task, callbacks arrive (${label})`,
        unit: '',
        gateway: withCallbacks.queriesPerTask,
        baseline: 1,
        ratio: withCallbacks.queriesPerTask,
        target: '≤ 0.2',
        pass: withCallbacks.queriesPerTask <= 0.2 && withCallbacks.finished === clock.tasks,
      },
      {
        scenario: 'poller',
        metric: 'recordInfo per task, every callback lost',
        unit: '',
        gateway: without.queriesPerTask,
        baseline: 1,
        ratio: without.queriesPerTask,
        target: '≤ 10',
        pass: without.queriesPerTask <= 10 && without.finished === clock.tasks,
        note:
          without.finished < clock.tasks
            ? `only ${without.finished} of ${clock.tasks} tasks finished`
            : undefined,
      },
      {
        scenario: 'poller',
        metric: 'final state late by, p99 share of age, callbacks lost',
        unit: '%',
        gateway: without.latenessShare.p99 * 100,
        baseline: null,
        ratio: null,
        target: '≤ 25%',
        pass: without.latenessShare.p99 <= 0.25,
        note: `${(without.withinQuarter * 100).toFixed(1)}% of tasks within 25%; lateness p50 ${without.latenessMs.p50.toFixed(0)} ms, p99 ${without.latenessMs.p99.toFixed(0)} ms; with callbacks p99 ${withCallbacks.latenessMs.p99.toFixed(0)} ms`,
      },
    ];
    return { rows, details: { clock, withCallbacks, without } };
  },
};
