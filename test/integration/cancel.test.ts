import { randomUUID } from 'node:crypto';
import { encodeGlobalID } from '@pothos/plugin-relay';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { databaseKinds, useTestDatabase } from '../helpers/database.js';
import {
  type CancelResult,
  cancelTask,
  createTask,
  createTaskOk,
  getTask,
  sampleInput,
  startTestGateway,
  type TaskView,
  type TestGateway,
  waitForState,
} from '../helpers/gateway.js';
import {
  subscribeFetchSse,
  TASK_UPDATED,
  type TaskUpdatedData,
  taskRow,
  tasksOf,
} from '../helpers/subscriptions.js';

const sources = (task: TaskView) => task.events.map((event) => [event.state, event.source]);

/** The creates kie received for one gateway task: its callback URL carries the task's own id. */
async function kieCreatesFor(kie: SimulatorServer, gateway: TestGateway, globalId: string): Promise<number> {
  const { id } = await taskRow(gateway, globalId);
  return kie.simulator.createdTasks().filter((created) => created.callBackUrl?.includes(id)).length;
}

const messageOf = (result: CancelResult) => ('message' in result ? result.message : '');

function expectCanceled(result: CancelResult): TaskView {
  expect(result.__typename).toBe('CancelAvatarTaskSuccess');
  if (!('task' in result)) throw new Error(`expected a canceled task, got ${JSON.stringify(result)}`);
  return result.task;
}

describe.each(databaseKinds())('cancelAvatarTask on %s', (kind) => {
  const database = useTestDatabase(kind);

  describe('a task waiting in the fair queue', () => {
    let kie: SimulatorServer;
    let gateway: TestGateway;

    beforeAll(async () => {
      kie = await startSimulatorServer({ knobs: { stepMs: 600_000 } });
      // One create per window and two unfinished tasks per user: the second task waits, and fills the quota.
      gateway = await startTestGateway({
        database,
        kieUrl: kie.url,
        env: { KIE_MAX_CREATES_PER_10S: '1', MAX_ACTIVE_TASKS_PER_USER: '2' },
      });
    });
    afterAll(async () => {
      await gateway?.stop();
      await kie?.close();
    });

    it('ends CANCELED for its subscribers, frees its quota place, and is never created at kie', async () => {
      const user = `canceler-${randomUUID()}`;
      const sent = await createTaskOk(gateway, sampleInput(), user);
      const queued = await createTaskOk(gateway, sampleInput({ prompt: 'never sent' }), user);
      expect([sent.state, queued.state]).toEqual(['WAITING', 'PENDING']);
      expect(await createTask(gateway, sampleInput(), user)).toMatchObject({ code: 'QUOTA_EXCEEDED' });

      const watching = await subscribeFetchSse<TaskUpdatedData>(gateway, user, {
        query: TASK_UPDATED,
        variables: { id: queued.id },
      });
      await watching.until((received) => received.data.length >= 1);

      const canceled = expectCanceled(await cancelTask(gateway, queued.id, user));
      expect(canceled).toMatchObject({ state: 'CANCELED', version: 2, upstreamTaskId: null });
      expect(canceled.failure?.code).toBe('CANCELED');
      expect(canceled.completedAt).not.toBeNull();
      expect(sources(canceled)).toEqual([
        ['PENDING', 'MUTATION'],
        ['CANCELED', 'MUTATION'],
      ]);
      expect(await watching.ended).toEqual({ kind: 'complete' });
      expect(tasksOf(watching).map((task) => task.state)).toEqual(['PENDING', 'CANCELED']);

      // Canceling again changes nothing and says so with the same task.
      expect(expectCanceled(await cancelTask(gateway, queued.id, user))).toMatchObject({
        state: 'CANCELED',
        version: 2,
      });

      // Its place in the user's quota is free at once; the next task takes the queue's next turn.
      const next = await createTaskOk(gateway, sampleInput({ prompt: 'sent after the cancel' }), user);
      expect(next.state).toBe('PENDING');
      await vi.waitFor(async () => expect((await getTask(gateway, next.id, user))?.state).toBe('WAITING'), {
        timeout: 20_000,
        interval: 100,
      });
      expect(kie.simulator.createdTasks()).toHaveLength(2);
      expect(await kieCreatesFor(kie, gateway, sent.id)).toBe(1);
      expect(await kieCreatesFor(kie, gateway, next.id)).toBe(1);
      expect(await kieCreatesFor(kie, gateway, queued.id)).toBe(0);
      expect((await getTask(gateway, queued.id, user))?.state).toBe('CANCELED');
    }, 30_000);

    it('answers ALREADY_SUBMITTED for a task kie has, and NOT_FOUND alike for a missing and a foreign id', async () => {
      const user = `owner-${randomUUID()}`;
      const submitted = await createTask(gateway, sampleInput(), user);
      const task = 'task' in submitted ? submitted.task : undefined;
      // The window is taken by the test above or this task: either way, wait until kie has it.
      const waiting = await vi.waitFor(
        async () => {
          const current = await getTask(gateway, task?.id ?? '', user);
          expect(current?.state).toBe('WAITING');
          return current as TaskView;
        },
        { timeout: 20_000, interval: 100 },
      );

      const refused = await cancelTask(gateway, waiting.id, user);
      expect(refused).toMatchObject({ __typename: 'AlreadySubmittedError', code: 'ALREADY_SUBMITTED' });
      expect(messageOf(refused)).toMatch(/render and its billing go on/);
      expect('task' in refused && refused.task).toMatchObject({ id: waiting.id, state: 'WAITING' });
      expect((await getTask(gateway, waiting.id, user))?.version).toBe(waiting.version);

      const foreign = await cancelTask(gateway, waiting.id, `stranger-${randomUUID()}`);
      const missing = await cancelTask(gateway, encodeGlobalID('AvatarTask', randomUUID()), user);
      const garbage = await cancelTask(gateway, 'not-an-id', user);
      for (const answer of [foreign, missing, garbage]) {
        expect(answer).toEqual({
          __typename: 'NotFoundError',
          code: 'NOT_FOUND',
          message: messageOf(foreign),
        });
      }
      expect((await getTask(gateway, waiting.id, user))?.state).toBe('WAITING');
    }, 30_000);
  });

  describe('a task waiting to be retried after kie refused it for now', () => {
    let kie: SimulatorServer;
    let gateway: TestGateway;

    beforeAll(async () => {
      kie = await startSimulatorServer({ knobs: { stepMs: 50 } });
      gateway = await startTestGateway({
        database,
        kieUrl: kie.url,
        env: { KIE_MAX_CREATES_PER_10S: '1000' },
      });
    });
    afterAll(async () => {
      await gateway?.stop();
      await kie?.close();
    });

    it('is canceled and never sent again, while an uncanceled sibling is retried and finishes', async () => {
      const user = `retried-${randomUUID()}`;
      const createsBefore = kie.simulator.stats.creates;
      // kie answers 503 until both are stored and one is canceled, so both wait for a retry.
      kie.simulator.knobs.createErrors = Array.from({ length: 1_000 }, () => 503);
      const canceledOne = await createTaskOk(gateway, sampleInput({ prompt: 'canceled' }), user);
      const retried = await createTaskOk(gateway, sampleInput({ prompt: 'retried' }), user);
      expect([canceledOne.state, retried.state]).toEqual(['PENDING', 'PENDING']);
      expectCanceled(await cancelTask(gateway, canceledOne.id, user));
      kie.simulator.knobs.createErrors = [];

      await waitForState(gateway, retried.id, 'SUCCEEDED', user);
      // One create, the sibling's; the canceled task's retry never went out.
      expect(kie.simulator.stats.creates - createsBefore).toBe(1);
      expect(await kieCreatesFor(kie, gateway, canceledOne.id)).toBe(0);
      expect(await kieCreatesFor(kie, gateway, retried.id)).toBe(1);
      expect((await getTask(gateway, canceledOne.id, user))?.state).toBe('CANCELED');
    });
  });

  describe('two instances: a cancel on one racing the submit loop of both', () => {
    let kie: SimulatorServer;
    let a: TestGateway;
    let b: TestGateway;

    beforeAll(async () => {
      kie = await startSimulatorServer({ knobs: { stepMs: 50 } });
      const env = { KIE_MAX_CREATES_PER_10S: '1000' };
      a = await startTestGateway({ database, kieUrl: kie.url, env });
      b = await startTestGateway({ database, kieUrl: kie.url, env });
    });
    afterAll(async () => {
      await a?.stop();
      await b?.stop();
      await kie?.close();
    });

    it('answers ALREADY_SUBMITTED while the other instance is sending the task, and it is sent once', async () => {
      const user = `mid-send-${randomUUID()}`;
      // kie takes the create, then holds its answer: the task is in flight from instance a.
      kie.simulator.knobs.createDelayMs = 1_500;
      try {
        const creating = createTask(a, sampleInput(), user);
        const id = await vi.waitFor(
          async () => {
            const result = await a.gql<{ avatarTasks: { edges: Array<{ node: { id: string } }> } }>(
              'query { avatarTasks(first: 1) { edges { node { id } } } }',
              {},
              user,
            );
            const found = result.data?.avatarTasks.edges[0]?.node.id;
            if (!found || (await kieCreatesFor(kie, a, found)) === 0) throw new Error('not at kie yet');
            return found;
          },
          { timeout: 5_000, interval: 10 },
        );
        const refused = await cancelTask(b, id, user);
        expect(refused).toMatchObject({ __typename: 'AlreadySubmittedError', code: 'ALREADY_SUBMITTED' });
        expect(messageOf(refused)).toMatch(/being sent to kie\.ai/);
        expect(await creating).toMatchObject({ __typename: 'CreateAvatarTaskSuccess' });
        await waitForState(b, id, 'SUCCEEDED', user);
        expect(await kieCreatesFor(kie, a, id)).toBe(1);
      } finally {
        kie.simulator.knobs.createDelayMs = 0;
      }
    });

    it('either cancels a task due for a retry or lets it go, never both, whichever instance claims it', async () => {
      const user = `racer-${randomUUID()}`;
      const count = 24;
      const createsBefore = kie.simulator.stats.creates;
      // kie answers 429 until every task is stored, so each waits for a retry; then it takes them.
      kie.simulator.knobs.createErrors = Array.from({ length: 1_000 }, () => 429);
      const tasks = await Promise.all(
        Array.from({ length: count }, (_, i) => createTaskOk(i % 2 ? a : b, sampleInput(), user)),
      );
      kie.simulator.knobs.createErrors = [];
      expect(tasks.every((task) => task.state === 'PENDING')).toBe(true);

      // Each cancel lands around the instant its task is due for the retry, when either instance's submit loop
      // may claim it: well before, about at, or well after the claim.
      const answers = await Promise.all(
        tasks.map(async (task, i) => {
          const due = (await taskRow(a, task.id)).nextCheckAt?.getTime() ?? Date.now();
          const offsetMs = -1_000 + ((i * 7) % count) * 125;
          await new Promise((resolve) => setTimeout(resolve, Math.max(0, due + offsetMs - Date.now())));
          return cancelTask(i % 2 ? b : a, task.id, user);
        }),
      );

      const kinds = { canceled: 0, submitted: 0 };
      for (const [i, task] of tasks.entries()) {
        const answer = answers[i] as CancelResult;
        if (answer.__typename === 'CancelAvatarTaskSuccess') {
          kinds.canceled++;
          expect((await getTask(a, task.id, user))?.state).toBe('CANCELED');
        } else {
          expect(answer).toMatchObject({ __typename: 'AlreadySubmittedError', code: 'ALREADY_SUBMITTED' });
          kinds.submitted++;
          await waitForState(a, task.id, 'SUCCEEDED', user);
        }
      }
      // Settle: nothing canceled is sent later by either instance.
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      for (const [i, task] of tasks.entries()) {
        const canceled = answers[i]?.__typename === 'CancelAvatarTaskSuccess';
        expect(await kieCreatesFor(kie, a, task.id), `task ${i}`).toBe(canceled ? 0 : 1);
        if (canceled) expect((await getTask(b, task.id, user))?.state).toBe('CANCELED');
      }
      // Which side each cancel lands on depends on the machine's load; whichever, kie got exactly the others.
      expect(kie.simulator.stats.creates - createsBefore).toBe(kinds.submitted);
      expect(kinds.canceled + kinds.submitted).toBe(count);
    }, 90_000);
  });
});
