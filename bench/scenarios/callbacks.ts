import { alternate, median, type Round } from '../lib/alternate.js';
import { callbackBody, callbackPath, signatureHeaders } from '../lib/callback.js';
import { NO_RESULT_COPIES, resultUrl, type SeedTask, waitingTask } from '../lib/database.js';
import { httpRequest } from '../lib/http.js';
import type { ServerProcess } from '../lib/processes.js';
import { seededRandom } from '../lib/stats.js';
import type { Scenario, ScenarioContext } from './types.js';

/**
 * Signed kie callbacks (success), one per task plus a duplicate for one task in ten, from 32 senders; against
 * a bare handler doing the HMAC check and the same transaction. Both servers run at once and take turns
 * (bench/lib/alternate.ts), each on its own tasks. Afterwards every task must be SUCCEEDED at version 3 with
 * exactly one SUCCEEDED event, whichever copy of a duplicated callback came first.
 */

const CONCURRENCY = 32;
const DUPLICATE_SHARE = 0.1;

/** Callback order over `tasks`: every task once, one in ten twice, shuffled. */
function workload(count: number, seed: number): number[] {
  const random = seededRandom(seed);
  const order = Array.from({ length: count }, (_, index) => index);
  for (let index = 0; index < count; index++) {
    if (random() < DUPLICATE_SHARE) order.push(index);
  }
  // Shuffled, so a duplicate may come right after its original or much later.
  for (let index = order.length - 1; index > 0; index--) {
    const other = Math.floor(random() * (index + 1));
    [order[index], order[other]] = [order[other] as number, order[index] as number];
  }
  return order;
}

async function verify(
  context: ScenarioContext,
  userPrefix: string,
): Promise<{ correct: number; wrong: number }> {
  const [row] = await context.database.sql<{ correct: number; wrong: number }[]>`
    with checked as (
      select t.state = 'SUCCEEDED' and t.version = 3
        and t.result_urls = jsonb_build_array('https://files.example.com/results/' || t.upstream_task_id || '.mp4')
        and (select count(*) from avatar_task_events e where e.task_id = t.id and e.state = 'SUCCEEDED') = 1 as ok
      from avatar_tasks t where t.user_id like ${`${userPrefix}-%`}
    )
    select count(*) filter (where ok)::int as correct, count(*) filter (where not ok)::int as wrong from checked`;
  return row ?? { correct: 0, wrong: -1 };
}

function side(server: ServerProcess, tasks: readonly SeedTask[], order: readonly number[]) {
  return {
    server,
    request: async (index: number) => {
      const position = order[index];
      if (position === undefined) throw new Error('ran out of seeded callbacks');
      const task = tasks[position] as SeedTask;
      const answer = await httpRequest(
        'POST',
        `${server.url}${callbackPath(task.id, task.callbackSecret)}`,
        callbackBody(task.upstreamTaskId, 'success', resultUrl(task.upstreamTaskId)),
        signatureHeaders(task.upstreamTaskId),
      );
      if (answer.status !== 200)
        throw new Error(`callback answered ${answer.status}: ${answer.body.slice(0, 120)}`);
      return true;
    },
  };
}

function summary(rounds: Round[]) {
  return {
    throughput: median(rounds.map((round) => round.throughput)),
    cpu: median(rounds.map((round) => round.cpu)),
    cpuMsPerCallback: median(rounds.map((round) => (round.cpu * 1000) / round.throughput)),
    failed: rounds.reduce((sum, round) => sum + round.failed, 0),
    firstError: rounds.find((round) => round.firstError)?.firstError,
    rounds: rounds.map(({ throughput, cpu, failed }) => ({ throughput, cpu, failed })),
  };
}

export const callbacksScenario: Scenario = {
  name: 'callbacks',
  async run(context) {
    const rounds = context.quick ? 2 : 5;
    const perRound = context.quick ? 500 : 2_000;
    const warmup = context.quick ? 200 : 500;
    // Each side gets its own tasks: a warm-up slice and one slice per round. The callbacks of a slice (its
    // tasks, one in ten twice, shuffled) are sent in one run, so both sides get exactly the same work.
    const slices = [warmup, ...Array.from({ length: rounds }, () => perRound)];
    const count = slices.reduce((sum, size) => sum + size, 0);
    const order: number[] = [];
    const limits: number[] = [];
    let offset = 0;
    for (const [slice, size] of slices.entries()) {
      const callbacks = workload(size, slice + 1).map((index) => index + offset);
      order.push(...callbacks);
      limits.push(callbacks.length);
      offset += size;
    }
    const gatewayTasks = Array.from({ length: count }, (_, index) =>
      waitingTask(`cbg-${index % 100}`, index),
    );
    const baselineTasks = Array.from({ length: count }, (_, index) =>
      waitingTask(`cbb-${index % 100}`, index),
    );
    await context.database.seed([...gatewayTasks, ...baselineTasks]);
    const gateway = await context.startGateway(NO_RESULT_COPIES);
    const baseline = await context.startBaseline('live', { DATABASE_URL: context.database.url });

    const run = await alternate({
      rounds,
      // Bounded by the slices, not by time.
      roundMs: 600_000,
      warmupMs: 600_000,
      limits,
      concurrency: CONCURRENCY,
      gateway: side(gateway, gatewayTasks, order),
      baseline: side(baseline, baselineTasks, order),
    });
    const g = summary(run.gateway);
    const b = summary(run.baseline);
    const gatewayCheck = await verify(context, 'cbg');
    const baselineCheck = await verify(context, 'cbb');
    const ratio = median(run.ratios);
    context.log(
      `gateway ${g.throughput.toFixed(0)}/s (${g.cpuMsPerCallback.toFixed(2)} ms CPU each), baseline ${b.throughput.toFixed(0)}/s (${b.cpuMsPerCallback.toFixed(2)} ms); round ratios ${run.ratios.map((r) => r.toFixed(2)).join(' ')}; right final states: gateway ${gatewayCheck.correct}/${count}, baseline ${baselineCheck.correct}/${count}`,
    );
    const allCorrect = gatewayCheck.correct === count && gatewayCheck.wrong === 0 && g.failed === 0;
    return {
      rows: [
        {
          scenario: 'callbacks',
          metric: `signed callbacks/s, ${Math.round(DUPLICATE_SHARE * 100)}% duplicates, ${CONCURRENCY} senders (median of ${rounds} rounds)`,
          unit: '/s',
          gateway: g.throughput,
          baseline: b.throughput,
          ratio,
          target: '≥ 0.5x',
          pass: ratio >= 0.5,
          note: `server CPU per callback: gateway ${g.cpuMsPerCallback.toFixed(2)} ms at ${(g.cpu * 100).toFixed(0)}% of its core, baseline ${b.cpuMsPerCallback.toFixed(2)} ms at ${(b.cpu * 100).toFixed(0)}%; round ratios ${run.ratios.map((r) => r.toFixed(2)).join(', ')}`,
        },
        {
          scenario: 'callbacks',
          metric: `tasks with the right final state (of ${count.toLocaleString('en-US')})`,
          unit: '',
          gateway: gatewayCheck.correct,
          baseline: baselineCheck.correct,
          ratio: null,
          target: 'all',
          pass: allCorrect,
          note: allCorrect
            ? undefined
            : `gateway: ${gatewayCheck.wrong} wrong, ${g.failed} callbacks refused (${g.firstError})`,
        },
      ],
      details: {
        tasks: count,
        callbacks: order.length,
        concurrency: CONCURRENCY,
        ratios: run.ratios,
        gateway: g,
        baseline: b,
      },
    };
  },
};
