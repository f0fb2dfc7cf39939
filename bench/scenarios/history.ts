import { randomBytes, randomUUID } from 'node:crypto';
import { encodeGlobalID } from '@pothos/plugin-relay';
import type { AvatarTaskState } from '../../src/tasks/states.js';
import { alternate, median, type Round } from '../lib/alternate.js';
import type { SeedTask } from '../lib/database.js';
import { explainHistory } from '../lib/explain.js';
import { httpRequest, postJson } from '../lib/http.js';
import type { ServerProcess } from '../lib/processes.js';
import { round, seededRandom, summarize } from '../lib/stats.js';
import { signToken } from '../lib/tokens.js';
import type { Scenario } from './types.js';

/**
 * `avatarTasks(first: 20, after:)` for a user with 10,000 tasks, at random depths, against the same keyset SQL
 * on bare node:http; and the plan Postgres picks for the gateway's query.
 */

const USER = 'history-user';
/** A user whose results were never copied (every copy given up), so each old result needs a fresh kie link. */
const UNCOPIED_USER = 'history-uncopied-user';
const PAGE = 20;
const INDEX = 'avatar_tasks_user_created_idx';
/** One request at a time for the latency target, so p99 is the cost of a page and not of a queue. */
const LATENCY_CONCURRENCY = 1;
/** Then many at once, for what one core serves. */
const THROUGHPUT_CONCURRENCY = 8;

const HISTORY = `query History($after: String) {
  avatarTasks(first: ${PAGE}, after: $after) {
    edges { cursor node { id state createdAt videoUrl } }
    pageInfo { hasNextPage endCursor }
  }
}`;

const sortNewestFirst = (tasks: readonly SeedTask[]) =>
  [...tasks].sort(
    (a, b) => b.createdAt.getTime() - a.createdAt.getTime() || (b.id < a.id ? -1 : b.id > a.id ? 1 : 0),
  );

const encodeCursor = (task: SeedTask) =>
  Buffer.from(`${task.createdAt.toISOString()}|${task.id}`, 'utf8').toString('base64url');

/**
 * `count` tasks a minute apart, the newest `newestAgeMs` old, with the copy the result copier left for each
 * SUCCEEDED one.
 */
function historyTasks(
  userId: string,
  count: number,
  random: () => number,
  copy: SeedTask['copy'],
  newestAgeMs = 0,
): SeedTask[] {
  const start = Date.now() - newestAgeMs - count * 60_000;
  return Array.from({ length: count }, (_, index) => {
    const roll = random();
    const state: AvatarTaskState = roll < 0.8 ? 'SUCCEEDED' : roll < 0.95 ? 'FAILED' : 'WAITING';
    const id = randomUUID();
    return {
      id,
      globalId: encodeGlobalID('AvatarTask', id),
      userId,
      state,
      version: state === 'WAITING' ? 2 : 3,
      upstreamTaskId: `history_${userId}_${index}_${randomBytes(3).toString('hex')}`,
      callbackSecret: randomBytes(24).toString('base64url'),
      // A minute apart, every 50th in the same millisecond as its neighbour, so the id tie-break is exercised.
      createdAt: new Date(start + (index - (index > 0 && index % 50 === 0 ? 1 : 0)) * 60_000),
      copy: state === 'SUCCEEDED' ? copy : undefined,
    };
  });
}

export const historyScenario: Scenario = {
  name: 'history',
  async run({ quick, database, startGateway, startBaseline, log, kie }) {
    const rowsForUser = quick ? 1_000 : 10_000;
    const requests = quick ? 200 : 4_000;
    const uncopiedPages = quick ? 20 : 200;
    const random = seededRandom(4);

    // As in a deployment with a result store (this gateway runs with the default, RESULT_STORAGE=local): every
    // SUCCEEDED task got its stored copy shortly after it succeeded, so its URL is a signed link to the copy.
    const mine = historyTasks(USER, rowsForUser, random, 'stored');
    // Other users' rows share the table and the index, as they would in production.
    const others = Array.from({ length: 20 }, (_, user) =>
      historyTasks(`history-other-${user}`, Math.ceil(rowsForUser / 10), random, 'stored'),
    ).flat();
    // Old results whose copy was given up, the newest two hours old (past KIE_RESULT_URL_FRESH_S): each needs
    // a fresh link from kie's download-url on its first read. Measured apart, so their cost stays visible.
    const uncopied = historyTasks(
      UNCOPIED_USER,
      uncopiedPages * PAGE,
      seededRandom(5),
      'failed',
      2 * 3_600_000,
    );
    await database.seed([...mine, ...others, ...uncopied]);
    const newestFirst = sortNewestFirst(mine);
    log(
      `seeded ${mine.length} tasks for ${USER}, ${others.length} for other users (results copied) and ${uncopied.length} for ${UNCOPIED_USER} (copies failed)`,
    );

    // The same pages in the same order for both sides: one page in ten is the first, the rest at random depth.
    const positions = Array.from({ length: requests + 200 }, () =>
      random() < 0.1 ? -1 : Math.floor(random() * (newestFirst.length - 1)),
    );
    const expectedEdges = (position: number) => Math.min(PAGE, newestFirst.length - position - 1);
    const auth = { authorization: `Bearer ${await signToken(USER)}` };

    const fetchers = (gateway: ServerProcess, baseline: ServerProcess, headers = auth) => ({
      gateway: async (after: string | null) => {
        const answer = await postJson(
          `${gateway.url}/graphql`,
          { query: HISTORY, variables: { after } },
          headers,
        );
        const body = JSON.parse(answer.body) as { data?: { avatarTasks: { edges: unknown[] } } };
        return body.data?.avatarTasks.edges.length ?? -1;
      },
      baseline: async (after: string | null) => {
        const query = after ? `?first=${PAGE}&after=${after}` : `?first=${PAGE}`;
        const answer = await httpRequest('GET', `${baseline.url}/tasks${query}`, undefined, headers);
        const body = JSON.parse(answer.body) as { data?: { avatarTasks: { edges: unknown[] } } };
        return body.data?.avatarTasks.edges.length ?? -1;
      },
    });
    const pageRequest = (fetchPage: (after: string | null) => Promise<number>) => async (index: number) => {
      const position = positions[index % positions.length] ?? -1;
      const cursor = position < 0 ? null : encodeCursor(newestFirst[position] as SeedTask);
      const edges = await fetchPage(cursor);
      return edges === (position < 0 ? PAGE : expectedEdges(position));
    };

    // Both servers run at once and take turns, in blocks of one client (latency) and then in rounds of eight
    // clients (throughput), so drift on a shared machine hits both alike.
    const gatewayServer = await startGateway();
    const baselineServer = await startBaseline('history', { DATABASE_URL: database.url });
    const fetch = fetchers(gatewayServer, baselineServer);
    const blocks = quick ? 2 : 5;
    const latency = await alternate({
      rounds: blocks,
      roundMs: 600_000,
      warmupMs: 600_000,
      limits: [quick ? 100 : 200, ...Array.from({ length: blocks }, () => Math.ceil(requests / blocks))],
      concurrency: LATENCY_CONCURRENCY,
      gateway: { server: gatewayServer, request: pageRequest(fetch.gateway) },
      baseline: { server: baselineServer, request: pageRequest(fetch.baseline) },
    });
    const throughput = await alternate({
      rounds: quick ? 2 : 4,
      roundMs: quick ? 500 : 2_000,
      warmupMs: quick ? 300 : 500,
      concurrency: THROUGHPUT_CONCURRENCY,
      gateway: { server: gatewayServer, request: pageRequest(fetch.gateway) },
      baseline: { server: baselineServer, request: pageRequest(fetch.baseline) },
    });
    const sideOf = (latencyRounds: Round[], throughputRounds: Round[]) => ({
      latency: summarize(latencyRounds.flatMap((round) => round.latencies)),
      failed: [...latencyRounds, ...throughputRounds].reduce((sum, round) => sum + round.failed, 0),
      firstError: [...latencyRounds, ...throughputRounds].find((round) => round.firstError)?.firstError,
      rps: median(throughputRounds.map((round) => round.throughput)),
      cpu: median(throughputRounds.map((round) => round.cpu)),
    });
    const gateway = sideOf(latency.gateway, throughput.gateway);
    const baseline = sideOf(latency.baseline, throughput.baseline);
    const rpsRatio = median(throughput.ratios);
    log(
      `gateway p50 ${round(gateway.latency.p50)} ms, p99 ${round(gateway.latency.p99)} ms, ${round(gateway.rps, 0)} pages/s`,
    );
    log(
      `baseline p50 ${round(baseline.latency.p50)} ms, p99 ${round(baseline.latency.p99)} ms, ${round(baseline.rps, 0)} pages/s`,
    );

    const refreshesForCopied = kie.stats.downloadUrls;

    // The pages of results without a copy, walked from the newest, one at a time, each side in turn: every
    // result on them is read for the first time, so the gateway asks kie for a fresh link for each (then
    // reuses it for 15 minutes, which the random pages above would hide).
    const uncopiedFetch = fetchers(gatewayServer, baselineServer, {
      authorization: `Bearer ${await signToken(UNCOPIED_USER)}`,
    });
    const uncopiedNewestFirst = sortNewestFirst(uncopied);
    const uncopiedTimes = { gateway: [] as number[], baseline: [] as number[] };
    let uncopiedWrongPages = 0;
    for (let page = 0; page < uncopiedPages; page++) {
      const last = uncopiedNewestFirst[page * PAGE - 1];
      const cursor = last ? encodeCursor(last) : null;
      for (const side of ['gateway', 'baseline'] as const) {
        const started = performance.now();
        const edges = await uncopiedFetch[side](cursor);
        uncopiedTimes[side].push(performance.now() - started);
        if (edges !== PAGE) uncopiedWrongPages++;
      }
    }
    const uncopiedGateway = summarize(uncopiedTimes.gateway);
    const uncopiedBaseline = summarize(uncopiedTimes.baseline);
    const refreshesForUncopied = kie.stats.downloadUrls - refreshesForCopied;
    log(
      `pages without copies: gateway p50 ${round(uncopiedGateway.p50)} ms, p99 ${round(uncopiedGateway.p99)} ms; baseline p99 ${round(uncopiedBaseline.p99)} ms; ${refreshesForUncopied} download-url calls`,
    );

    // A page deep in the history: the cursor must narrow the index scan, not filter rows after it.
    const deep = newestFirst[Math.floor(newestFirst.length * 0.9)] as SeedTask;
    const plan = await explainHistory(database.url, USER, { createdAt: deep.createdAt, id: deep.id }, INDEX);
    const cursorInIndex = plan.indexCond?.includes('created_at') ?? false;
    log(`plan: ${plan.nodeType} ${INDEX}; cond ${plan.indexCond}; filter ${plan.filter}`);

    return {
      rows: [
        {
          scenario: 'history',
          metric: `p99, ${PAGE} per page, ${rowsForUser.toLocaleString('en-US')} tasks, one client`,
          unit: 'ms',
          gateway: gateway.latency.p99,
          baseline: baseline.latency.p99,
          ratio: gateway.latency.p99 / baseline.latency.p99,
          target: 'p99 < 10 ms',
          pass: gateway.latency.p99 < 10 && gateway.failed === 0,
          note:
            gateway.failed + baseline.failed > 0
              ? `wrong pages: gateway ${gateway.failed}, baseline ${baseline.failed} (${gateway.firstError ?? baseline.firstError})`
              : undefined,
        },
        {
          scenario: 'history',
          metric: `pages/s, ${THROUGHPUT_CONCURRENCY} clients`,
          unit: '/s',
          gateway: gateway.rps,
          baseline: baseline.rps,
          ratio: rpsRatio,
          target: '',
          pass: null,
          // Every result here has a stored copy: a signed URL, no kie call.
          note: `kie download-url calls: ${refreshesForCopied.toLocaleString('en-US')} (every result has a stored copy)`,
        },
        {
          scenario: 'history',
          metric: `p99 of a page whose old results need a fresh kie link (copy failed), one client`,
          unit: 'ms',
          gateway: uncopiedGateway.p99,
          baseline: uncopiedBaseline.p99,
          ratio: uncopiedGateway.p99 / uncopiedBaseline.p99,
          target: '',
          pass: null,
          note: `${uncopiedPages} pages walked from the newest, each result read for the first time: ${refreshesForUncopied.toLocaleString('en-US')} kie download-url calls; p50 ${round(uncopiedGateway.p50)} ms against ${round(uncopiedBaseline.p50)} ms${uncopiedWrongPages > 0 ? `; wrong pages: ${uncopiedWrongPages}` : ''}`,
        },
        {
          scenario: 'history',
          metric: 'EXPLAIN, page at 90% depth',
          unit: 'ms',
          gateway: plan.executionMs,
          baseline: null,
          ratio: null,
          target: `index scan on ${INDEX}`,
          pass: plan.usesIndex,
          note: `${plan.nodeType} using ${INDEX}; Index Cond: ${plan.indexCond ?? 'none'}; Filter: ${plan.filter ?? 'none'}${plan.rowsRemovedByFilter ? `; rows removed by filter: ${plan.rowsRemovedByFilter}` : ''}${cursorInIndex ? '' : ' (the cursor is applied as a filter after the scan, not as a bound of it)'}${plan.sorted ? '; the rows are sorted after the scan' : ''}`,
        },
      ],
      details: {
        latencyConcurrency: LATENCY_CONCURRENCY,
        throughputConcurrency: THROUGHPUT_CONCURRENCY,
        gateway,
        baseline,
        uncopied: {
          pages: uncopiedPages,
          gateway: uncopiedGateway,
          baseline: uncopiedBaseline,
          refreshesForUncopied,
        },
        plan,
      },
    };
  },
};
