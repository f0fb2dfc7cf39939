import { alternate, median, type Round } from '../lib/alternate.js';
import { postJson } from '../lib/http.js';
import { summarize } from '../lib/stats.js';
import { signToken } from '../lib/tokens.js';
import type { Scenario } from './types.js';

/**
 * createAvatarTask back to back from 16 clients against the fake kie (answers at once, never finishes a task),
 * against a bare node:http handler doing the same SQL with postgres.js and the same kie call. Both servers run
 * at once and take turns (bench/lib/alternate.ts).
 */

const CONCURRENCY = 16;
const USERS = 100;

const CREATE = `mutation Create($input: CreateAvatarTaskInput!) {
  createAvatarTask(input: $input) {
    __typename
    ... on CreateAvatarTaskSuccess { task { id state upstreamTaskId } }
    ... on Error { code message }
  }
}`;

interface CreateAnswer {
  data?: {
    createAvatarTask?: { __typename: string; task?: { state: string; upstreamTaskId: string | null } };
  };
}

const input = (index: number) => ({
  imageUrl: `https://cdn.example.com/faces/${index}.png`,
  audioUrl: `https://cdn.example.com/voices/${index}.mp3`,
  prompt: 'A friendly presenter, looking at the camera',
});

const accepted = (answer: CreateAnswer) => {
  const task = answer.data?.createAvatarTask?.task;
  return task?.state === 'WAITING' && Boolean(task.upstreamTaskId);
};

function sideSummary(rounds: Round[]) {
  const throughput = median(rounds.map((round) => round.throughput));
  const cpu = median(rounds.map((round) => round.cpu));
  return {
    throughput,
    cpu,
    // CPU per create is the steadier figure on a shared machine, and shows whether a side was CPU-bound.
    cpuMsPerCreate: median(rounds.map((round) => (round.cpu * 1000) / round.throughput)),
    latency: summarize(rounds.flatMap((round) => round.latencies)),
    failed: rounds.reduce((sum, round) => sum + round.failed, 0),
    firstError: rounds.find((round) => round.firstError)?.firstError,
    rounds: rounds.map(({ throughput, cpu, failed }) => ({ throughput, cpu, failed })),
  };
}

export const createScenario: Scenario = {
  name: 'create',
  async run(context) {
    const tokens = await Promise.all(
      Array.from({ length: USERS }, (_, user) => signToken(`creator-${user}`)),
    );
    const auth = (index: number) => ({ authorization: `Bearer ${tokens[index % USERS]}` });
    context.kie.reset({ callbacks: 'drop' });
    const gateway = await context.startGateway();
    const baseline = await context.startBaseline('create', { DATABASE_URL: context.database.url });

    const run = await alternate({
      rounds: context.quick ? 2 : 5,
      roundMs: context.quick ? 1_000 : 2_000,
      warmupMs: context.quick ? 500 : 2_000,
      concurrency: CONCURRENCY,
      gateway: {
        server: gateway,
        request: async (index) => {
          const body = { query: CREATE, variables: { input: input(index) } };
          return accepted(JSON.parse((await postJson(`${gateway.url}/graphql`, body, auth(index))).body));
        },
      },
      baseline: {
        server: baseline,
        request: async (index) =>
          accepted(JSON.parse((await postJson(`${baseline.url}/tasks`, input(index), auth(index))).body)),
      },
    });

    // Every stored task was sent to kie exactly once and is WAITING, on both sides.
    const rows = await context.database.sql<{ state: string; count: number }[]>`
      select state, count(*)::int as count from avatar_tasks group by state`;
    const stored = rows.reduce((sum, row) => sum + row.count, 0);
    const allWaiting = rows.every((row) => row.state === 'WAITING') && stored === context.kie.stats.creates;
    const g = sideSummary(run.gateway);
    const b = sideSummary(run.baseline);
    const ratio = median(run.ratios);
    context.log(
      `gateway ${g.throughput.toFixed(0)}/s (${g.cpuMsPerCreate.toFixed(2)} ms CPU each), baseline ${b.throughput.toFixed(0)}/s (${b.cpuMsPerCreate.toFixed(2)} ms); round ratios ${run.ratios.map((r) => r.toFixed(2)).join(' ')}; ${stored} rows, all WAITING and sent once: ${allWaiting}`,
    );
    const wrong = g.failed > 0 || !allWaiting;
    return {
      rows: [
        {
          scenario: 'create',
          metric: `createAvatarTask throughput, ${CONCURRENCY} clients (median of ${run.ratios.length} rounds)`,
          unit: '/s',
          gateway: g.throughput,
          baseline: b.throughput,
          ratio,
          target: '≥ 0.5x',
          pass: ratio >= 0.5 && !wrong,
          note: `${wrong ? `gateway: ${g.failed} failed creates (${g.firstError}); every row WAITING and sent once: ${allWaiting}. ` : ''}server CPU per create: gateway ${g.cpuMsPerCreate.toFixed(2)} ms at ${(g.cpu * 100).toFixed(0)}% of its core, baseline ${b.cpuMsPerCreate.toFixed(2)} ms at ${(b.cpu * 100).toFixed(0)}%; round ratios ${run.ratios.map((r) => r.toFixed(2)).join(', ')}`,
        },
        {
          scenario: 'create',
          metric: 'p50 latency',
          unit: 'ms',
          gateway: g.latency.p50,
          baseline: b.latency.p50,
          ratio: g.latency.p50 / b.latency.p50,
          target: '',
          pass: null,
        },
      ],
      details: { concurrency: CONCURRENCY, ratios: run.ratios, gateway: g, baseline: b, stored, allWaiting },
    };
  },
};
