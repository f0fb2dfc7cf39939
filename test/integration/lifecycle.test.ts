import { randomUUID } from 'node:crypto';
import { encodeGlobalID } from '@pothos/plugin-relay';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { databaseKinds, useTestDatabase } from '../helpers/database.js';
import {
  createTaskOk,
  getTask,
  sampleInput,
  startTestGateway,
  type TaskView,
  type TestGateway,
  VIDEO_URL,
  waitForState,
} from '../helpers/gateway.js';

const wait = { timeout: 10_000, interval: 25 };

const sources = (task: TaskView) => task.events.map((event) => [event.state, event.source]);

/** Versions 1, 2, 3, ... one event each: nothing skipped, nothing written twice. */
function expectConsecutiveVersions(task: TaskView) {
  expect(task.events.map((event) => event.version)).toEqual(task.events.map((_event, i) => i + 1));
  expect(task.version).toBe(task.events.length);
}

interface Page {
  edges: Array<{ cursor: string; node: { id: string; state: string } }>;
  pageInfo: { hasNextPage: boolean; endCursor: string | null };
}

const LIST = `query List($first: Int, $after: String, $states: [AvatarTaskState!]) {
  avatarTasks(first: $first, after: $after, states: $states) {
    edges { cursor node { id state } }
    pageInfo { hasNextPage endCursor }
  }
}`;

async function listPage(gateway: TestGateway, user: string, variables: Record<string, unknown>) {
  const result = await gateway.gql<{ avatarTasks: Page }>(LIST, variables, user);
  if (!result.data) throw new Error(`avatarTasks failed: ${JSON.stringify(result.errors)}`);
  return result.data.avatarTasks;
}

/** Walks every page and checks each page's own bookkeeping on the way. */
async function listAll(gateway: TestGateway, user: string, variables: Record<string, unknown>) {
  const ids: string[] = [];
  let after: string | null = null;
  for (let pages = 0; pages < 100; pages++) {
    const page: Page = await listPage(gateway, user, { ...variables, after });
    ids.push(...page.edges.map((edge) => edge.node.id));
    if (page.edges.length > 0) expect(page.pageInfo.endCursor).toBe(page.edges.at(-1)?.cursor);
    if (!page.pageInfo.hasNextPage) return ids;
    after = page.pageInfo.endCursor;
  }
  throw new Error('pagination never ended');
}

// One database per kind for the whole file (an embedded PGlite takes seconds to start on a busy machine);
// each block runs its own simulator and gateway, stopped before the next block starts.
describe.each(databaseKinds())('on %s', (kind) => {
  const database = useTestDatabase(kind);

  describe('task lifecycle', () => {
    let kie: SimulatorServer;
    let gateway: TestGateway;

    beforeAll(async () => {
      kie = await startSimulatorServer({ knobs: { stepMs: 50 } });
      gateway = await startTestGateway({
        database,
        kieUrl: kie.url,
        // The first poll comes well after the simulator's callback (3 × 50 ms), as with the defaults
        // (30 s against kie's minutes), so a poll only happens when the callback is lost.
        env: { POLL_MIN_DELAY_MS: '500', KIE_MAX_CREATES_PER_10S: '1000' },
      });
    });
    afterAll(async () => {
      await gateway?.stop();
      await kie?.close();
    });
    beforeEach(() => {
      kie.simulator.knobs.callbackMode = 'normal';
    });

    it('reaches SUCCEEDED through the callback with its result and whole history', async () => {
      const created = await createTaskOk(gateway, sampleInput({ prompt: 'Smile, then speak' }));
      expect(created).toMatchObject({
        state: 'WAITING',
        version: 2,
        model: 'PRO',
        prompt: 'Smile, then speak',
        resultUrls: [],
        videoUrl: null,
        completedAt: null,
        failure: null,
      });
      expect(created.upstreamTaskId).toMatch(/^task_kling_/);

      const task = await waitForState(gateway, created.id, 'SUCCEEDED');
      expect(sources(task)).toEqual([
        ['PENDING', 'MUTATION'],
        ['WAITING', 'MUTATION'],
        ['SUCCEEDED', 'CALLBACK'],
      ]);
      expectConsecutiveVersions(task);
      expect(task.upstreamTaskId).toBe(created.upstreamTaskId);
      expect(task.resultUrls).toHaveLength(1);
      expect(task.videoUrl).toBe(task.resultUrls[0]);
      expect(task.failure).toBeNull();
      const completedAt = Date.parse(String(task.completedAt));
      expect(completedAt).toBeGreaterThanOrEqual(Date.parse(String(task.createdAt)));
      expect(Date.parse(String(task.updatedAt))).toBe(completedAt);
      expect(Date.parse(task.events.at(-1)?.at ?? '')).toBe(completedAt);

      // The result URL is a real, playable video.
      const video = await fetch(task.videoUrl ?? '');
      expect(video.status).toBe(200);
      expect(video.headers.get('content-type')).toBe('video/mp4');
      expect((await video.arrayBuffer()).byteLength).toBeGreaterThan(1000);
    });

    it('finishes through the poller alone when every callback is lost', async () => {
      kie.simulator.knobs.callbackMode = 'drop';
      const before = { ...kie.simulator.stats };
      const created = await createTaskOk(gateway);

      const task = await waitForState(gateway, created.id, 'SUCCEEDED');
      expect(task.videoUrl).toMatch(VIDEO_URL);
      expect(task.events.at(-1)).toMatchObject({ state: 'SUCCEEDED', source: 'POLLER' });
      expect(task.events.map((event) => event.source)).not.toContain('CALLBACK');
      expectConsecutiveVersions(task);
      expect(kie.simulator.stats.callbacksSent).toBe(before.callbacksSent);
      expect(kie.simulator.stats.creates - before.creates).toBe(1);
      // The first poll already sees the result; a little slack for a slow machine, but no hammering.
      const queries = kie.simulator.stats.queries - before.queries;
      expect(queries).toBeGreaterThanOrEqual(1);
      expect(queries).toBeLessThanOrEqual(3);
    });

    it('spends one create and few queries per task, with callbacks and without', async () => {
      const tasksPerRun = 5;
      const measure = async (callbackMode: 'normal' | 'drop') => {
        kie.simulator.knobs.callbackMode = callbackMode;
        const before = { ...kie.simulator.stats };
        const created = await Promise.all(
          Array.from({ length: tasksPerRun }, () => createTaskOk(gateway, sampleInput())),
        );
        await Promise.all(created.map((task) => waitForState(gateway, task.id, 'SUCCEEDED')));
        return {
          creates: (kie.simulator.stats.creates - before.creates) / tasksPerRun,
          queries: (kie.simulator.stats.queries - before.queries) / tasksPerRun,
        };
      };
      const withCallbacks = await measure('normal');
      const dropped = await measure('drop');
      console.log(
        `upstream calls per task (${kind}, ${tasksPerRun} tasks each): ` +
          `callbacks on ${withCallbacks.creates.toFixed(1)} creates + ${withCallbacks.queries.toFixed(1)} queries; ` +
          `callbacks dropped ${dropped.creates.toFixed(1)} creates + ${dropped.queries.toFixed(1)} queries`,
      );
      expect(withCallbacks.creates).toBe(1);
      expect(dropped.creates).toBe(1);
      // With callbacks the poller has nothing to do before the first poll is due; a slow machine may let
      // one poll through before a callback lands, never more. Each success callback is confirmed with one
      // recordInfo (CONFIRM_CALLBACKS, on without an HMAC key).
      expect(withCallbacks.queries).toBeLessThanOrEqual(2);
      expect(dropped.queries).toBeGreaterThanOrEqual(1);
      expect(dropped.queries).toBeLessThanOrEqual(3);
    });

    describe('history (avatarTasks)', () => {
      const user = 'historian';
      let createdIds: string[];
      let failedIds: string[];

      beforeAll(async () => {
        kie.simulator.knobs.callbackMode = 'normal';
        createdIds = [];
        failedIds = [];
        // One after another, so creation order is unambiguous; two fail at kie ('[fail]' in the prompt).
        for (let i = 0; i < 7; i++) {
          const fail = i === 1 || i === 4;
          const task = await createTaskOk(
            gateway,
            sampleInput({ prompt: fail ? `[fail] ${i}` : `#${i}` }),
            user,
          );
          createdIds.push(task.id);
          if (fail) failedIds.push(task.id);
        }
        await vi.waitFor(async () => {
          const finished = await listPage(gateway, user, { first: 100, states: ['SUCCEEDED', 'FAILED'] });
          expect(finished.edges).toHaveLength(7);
        }, wait);
      });

      it('lists newest first, page by page, with no duplicates or gaps', async () => {
        const newestFirst = [...createdIds].reverse();
        const first = await listPage(gateway, user, { first: 3 });
        expect(first.edges.map((edge) => edge.node.id)).toEqual(newestFirst.slice(0, 3));
        expect(first.pageInfo.hasNextPage).toBe(true);
        const second = await listPage(gateway, user, { first: 3, after: first.pageInfo.endCursor });
        expect(second.edges.map((edge) => edge.node.id)).toEqual(newestFirst.slice(3, 6));
        expect(second.pageInfo.hasNextPage).toBe(true);
        const third = await listPage(gateway, user, { first: 3, after: second.pageInfo.endCursor });
        expect(third.edges.map((edge) => edge.node.id)).toEqual(newestFirst.slice(6));
        expect(third.pageInfo.hasNextPage).toBe(false);
        expect(await listAll(gateway, user, { first: 2 })).toEqual(newestFirst);
        expect(await listAll(gateway, user, {})).toEqual(newestFirst);
      });

      it('filters by state, also across pages', async () => {
        const failed = await listPage(gateway, user, { states: ['FAILED'] });
        expect(failed.edges.map((edge) => edge.node.id)).toEqual([...failedIds].reverse());
        expect(failed.edges.every((edge) => edge.node.state === 'FAILED')).toBe(true);
        expect(await listAll(gateway, user, { first: 1, states: ['FAILED'] })).toEqual(
          [...failedIds].reverse(),
        );
        const succeeded = await listAll(gateway, user, { first: 2, states: ['SUCCEEDED'] });
        expect(succeeded).toEqual([...createdIds].reverse().filter((id) => !failedIds.includes(id)));
        expect((await listPage(gateway, user, { states: ['PENDING', 'WAITING'] })).edges).toEqual([]);
        const both = await listPage(gateway, user, { states: ['FAILED', 'SUCCEEDED'] });
        expect(both.edges).toHaveLength(7);
      });

      it('shows each listed task with its failure as in avatarTask', async () => {
        const failedId = failedIds[0] ?? '';
        const task = await getTask(gateway, failedId, user);
        expect(task?.failure?.code).toBe('GENERATION_FAILED');
        expect(task?.failure?.message).toContain('Simulated generation failure');
        expect(task?.resultUrls).toEqual([]);
        expect(task?.events.at(-1)).toMatchObject({ state: 'FAILED', source: 'CALLBACK' });
      });

      it('refuses a cursor it did not make', async () => {
        for (const after of ['garbage', Buffer.from('nope').toString('base64url')]) {
          const result = await gateway.gql(LIST, { first: 2, after }, user);
          expect(result.data ?? null).toBeNull();
          expect(result.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
          expect(result.errors?.[0]?.message).toMatch(/cursor/);
        }
      });

      it('caps a page at 100 and pages through ties in creation time', async () => {
        const many = 'prolific';
        const repository = gateway.app.service.repository;
        const base = Date.now() - 60_000;
        const expected: Array<{ id: string; at: number }> = [];
        // Groups of five share a millisecond, so the id tie-break of the keyset is exercised.
        for (let i = 0; i < 105; i++) {
          const at = base + Math.floor(i / 5);
          const id = randomUUID();
          expected.push({ id, at });
          await repository.insert(
            {
              id,
              userId: many,
              model: 'PRO',
              imageUrl: 'https://example.com/face.png',
              audioUrl: 'https://example.com/voice.mp3',
              inputHash: 'h',
              callbackSecret: `secret-${i}`,
              nextCheckAt: null,
            },
            new Date(at),
          );
        }
        expected.sort((a, b) => b.at - a.at || (a.id < b.id ? 1 : -1));

        const capped = await listPage(gateway, many, { first: 1000 });
        expect(capped.edges).toHaveLength(100);
        expect(capped.pageInfo.hasNextPage).toBe(true);
        const rest = await listPage(gateway, many, { first: 1000, after: capped.pageInfo.endCursor });
        expect(rest.edges).toHaveLength(5);
        expect(rest.pageInfo.hasNextPage).toBe(false);
        const empty = await listPage(gateway, many, { first: 0 });
        expect(empty.edges).toHaveLength(0);
        expect(empty.pageInfo.hasNextPage).toBe(true);
        const negative = await gateway.gql(LIST, { first: -1 }, many);
        expect(negative.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
        expect(await listAll(gateway, many, { first: 7 })).toEqual(
          expected.map((task) => encodeGlobalID('AvatarTask', task.id)),
        );
      });
    });
  });

  describe('task timeout', () => {
    let kie: SimulatorServer;
    let gateway: TestGateway;

    beforeAll(async () => {
      // Each simulated step takes a minute: the task cannot finish within the gateway's timeout.
      kie = await startSimulatorServer({ knobs: { stepMs: 60_000 } });
      gateway = await startTestGateway({
        database,
        kieUrl: kie.url,
        env: { TASK_TIMEOUT_MS: '1000', POLL_MIN_DELAY_MS: '200' },
      });
    });
    afterAll(async () => {
      await gateway?.stop();
      await kie?.close();
    });

    it('ends FAILED with code TIMEOUT when kie does not finish in time', async () => {
      const created = await createTaskOk(gateway);
      expect(created.state).toBe('WAITING');
      const task = await waitForState(gateway, created.id, 'FAILED');
      expect(task.failure?.code).toBe('TIMEOUT');
      expect(task.events.at(-1)).toMatchObject({ state: 'FAILED', source: 'TIMEOUT' });
      expect(task.completedAt).not.toBeNull();
      expect(
        Date.parse(String(task.completedAt)) - Date.parse(String(task.createdAt)),
      ).toBeGreaterThanOrEqual(1000);
      expectConsecutiveVersions(task);
      // kie was asked while there was time, and the task was sent once.
      expect(kie.simulator.stats.queries).toBeGreaterThanOrEqual(1);
      expect(kie.simulator.stats.creates).toBe(1);
    });

    it('times out on time even when the first poll would come after the timeout', async () => {
      const late = await startTestGateway({
        database,
        kieUrl: kie.url,
        env: { TASK_TIMEOUT_MS: '1000', POLL_MIN_DELAY_MS: '600000', POLL_MAX_DELAY_MS: '600000' },
      });
      try {
        const created = await createTaskOk(late);
        const task = await waitForState(late, created.id, 'FAILED');
        expect(task.failure?.code).toBe('TIMEOUT');
      } finally {
        await late.stop();
      }
    });
  });
});
