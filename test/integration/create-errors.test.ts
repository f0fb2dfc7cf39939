import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { taskErrorCodes, taskFailureCodes } from '../../src/tasks/errors.js';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { databaseKinds, useTestDatabase } from '../helpers/database.js';
import {
  type CreateResult,
  createTask,
  createTaskOk,
  getTask,
  sampleInput,
  startTestGateway,
  TASK_FIELDS,
  type TaskView,
  type TestGateway,
  waitForState,
} from '../helpers/gateway.js';

interface EnumIntrospection {
  fields?: Array<{ name: string; type: unknown }>;
  enumValues?: Array<{ name: string; description: string | null }>;
}

/** A user's whole history, newest first. */
async function history(gateway: TestGateway, user: string): Promise<TaskView[]> {
  const result = await gateway.gql<{ avatarTasks: { edges: Array<{ node: TaskView }> } }>(
    `query { avatarTasks(first: 100) { edges { node { ${TASK_FIELDS} } } } }`,
    {},
    user,
  );
  if (!result.data) throw new Error(`avatarTasks failed: ${JSON.stringify(result.errors)}`);
  return result.data.avatarTasks.edges.map((edge) => edge.node);
}

function expectSuccess(result: CreateResult): TaskView {
  expect(result.__typename).toBe('CreateAvatarTaskSuccess');
  if (!('task' in result)) throw new Error(`expected a task, got ${JSON.stringify(result)}`);
  return result.task;
}

const sources = (task: TaskView) => task.events.map((event) => [event.state, event.source]);

// One database per kind for the whole file (an embedded PGlite takes seconds to start on a busy machine);
// each block runs its own simulator and gateway, stopped before the next block starts.
describe.each(databaseKinds())('on %s', (kind) => {
  const database = useTestDatabase(kind);

  describe('createAvatarTask against kie errors and bad input', () => {
    let kie: SimulatorServer;
    let gateway: TestGateway;

    beforeAll(async () => {
      kie = await startSimulatorServer({ knobs: { stepMs: 50 } });
      gateway = await startTestGateway({
        database,
        kieUrl: kie.url,
        // Each 402 below is kie's own answer: the breaker it opens lets the next create probe at once.
        env: { KIE_MAX_CREATES_PER_10S: '1000', KIE_CREDITS_COOLDOWN_MS: '1' },
      });
    });
    afterAll(async () => {
      await gateway?.stop();
      await kie?.close();
    });
    afterEach(() => {
      kie.simulator.knobs.createErrors = [];
    });

    it.each([
      [402, 'InsufficientCreditsError', 'INSUFFICIENT_CREDITS'],
      [422, 'UpstreamRejectedError', 'UPSTREAM_REJECTED'],
      [401, 'UpstreamRejectedError', 'UPSTREAM_REJECTED'],
      [505, 'UpstreamRejectedError', 'UPSTREAM_REJECTED'],
    ])(
      'turns kie %i at create into %s, and keeps the task in history as FAILED',
      async (code, type, errorCode) => {
        const user = `refused-${code}`;
        const before = { ...kie.simulator.stats };
        kie.simulator.knobs.createErrors = [code];
        const result = await createTask(gateway, sampleInput(), user);
        expect(result).toMatchObject({ __typename: type, code: errorCode });
        expect('message' in result && result.message).toContain(String(code));
        expect(kie.simulator.stats.createRequests - before.createRequests).toBe(1);
        expect(kie.simulator.stats.creates).toBe(before.creates);

        const [task, ...others] = await history(gateway, user);
        expect(others).toEqual([]);
        expect(task?.state).toBe('FAILED');
        expect(task?.failure?.code).toBe(errorCode);
        expect(task?.upstreamTaskId).toBeNull();
        expect(task && sources(task)).toEqual([
          ['PENDING', 'MUTATION'],
          ['FAILED', 'MUTATION'],
        ]);
      },
    );

    it('keeps the task PENDING on kie 429, 455 and 5xx, then submits it and finishes it', async () => {
      const codes = [429, 455, 500, 503];
      const before = { ...kie.simulator.stats };
      kie.simulator.knobs.createErrors = [...codes];
      const created: TaskView[] = [];
      for (const code of codes) {
        const task = expectSuccess(await createTask(gateway, sampleInput({ prompt: `kie said ${code}` })));
        expect(task).toMatchObject({ state: 'PENDING', upstreamTaskId: null, version: 1 });
        created.push(task);
      }
      expect(kie.simulator.knobs.createErrors).toEqual([]);
      for (const task of created) {
        const done = await waitForState(gateway, task.id, 'SUCCEEDED');
        expect(done.upstreamTaskId).toMatch(/^task_kling_/);
        expect(sources(done)).toEqual([
          ['PENDING', 'MUTATION'],
          ['WAITING', 'POLLER'],
          ['SUCCEEDED', 'CALLBACK'],
        ]);
      }
      // Each refused once, then sent once more and created once. This also shows that the tasks kie refused
      // in the tests above were not resent meanwhile: their requests would be counted here.
      expect(kie.simulator.stats.createRequests - before.createRequests).toBe(codes.length * 2);
      expect(kie.simulator.stats.creates - before.creates).toBe(codes.length);
    });

    it.each([
      ['imageUrl', { imageUrl: 'not a url' }],
      ['imageUrl', { imageUrl: '/relative/face.png' }],
      ['audioUrl', { audioUrl: 'ftp://example.com/voice.mp3' }],
      ['audioUrl', { audioUrl: 'javascript:alert(1)' }],
      ['imageUrl', { imageUrl: `https://example.com/${'a'.repeat(2049 - 'https://example.com/'.length)}` }],
      ['audioUrl', { audioUrl: `https://example.com/${'a'.repeat(3000)}.mp3` }],
      ['prompt', { prompt: 'p'.repeat(5001) }],
      ['idempotencyKey', { idempotencyKey: 'k'.repeat(256) }],
    ])('refuses a bad %s with INVALID_INPUT and sends nothing', async (field, overrides) => {
      const user = 'careless';
      const before = { ...kie.simulator.stats };
      const result = await createTask(gateway, sampleInput(overrides), user);
      expect(result).toMatchObject({ __typename: 'InvalidInputError', code: 'INVALID_INPUT', field });
      expect('message' in result && result.message).toContain(field);
      expect(kie.simulator.stats.createRequests).toBe(before.createRequests);
      expect(await history(gateway, user)).toEqual([]);
    });

    it('accepts input exactly at the limits', async () => {
      const imageUrl = `https://example.com/${'a'.repeat(2048 - 'https://example.com/'.length)}`;
      expect(imageUrl).toHaveLength(2048);
      const task = expectSuccess(
        await createTask(
          gateway,
          sampleInput({ imageUrl, prompt: 'p'.repeat(5000), idempotencyKey: 'k'.repeat(255) }),
          'precise',
        ),
      );
      expect(task.state).toBe('WAITING');
      expect(task.imageUrl).toBe(imageUrl);
    });

    it('types every code as an enum of the codes the gateway uses, each documented', async () => {
      const codeType = `fields { name type { kind ofType { kind name } } }`;
      const result = await gateway.gql<Record<string, EnumIntrospection>>(
        `query {
          error: __type(name: "Error") { ${codeType} }
          failure: __type(name: "AvatarTaskFailure") { ${codeType} }
          errorCodes: __type(name: "AvatarTaskErrorCode") { enumValues { name description } }
          failureCodes: __type(name: "AvatarTaskFailureCode") { enumValues { name description } }
        }`,
      );
      const codeField = (type: EnumIntrospection | undefined) =>
        type?.fields?.find((field) => field.name === 'code')?.type;
      expect(codeField(result.data?.error)).toEqual({
        kind: 'NON_NULL',
        ofType: { kind: 'ENUM', name: 'AvatarTaskErrorCode' },
      });
      expect(codeField(result.data?.failure)).toEqual({
        kind: 'NON_NULL',
        ofType: { kind: 'ENUM', name: 'AvatarTaskFailureCode' },
      });
      const values = (type: EnumIntrospection | undefined) => type?.enumValues ?? [];
      expect(values(result.data?.errorCodes).map((value) => value.name)).toEqual([...taskErrorCodes]);
      expect(values(result.data?.failureCodes).map((value) => value.name)).toEqual([...taskFailureCodes]);
      for (const value of [...values(result.data?.errorCodes), ...values(result.data?.failureCodes)]) {
        expect(value.description, value.name).toMatch(/\w{3,}/);
      }
    });

    describe('idempotency', () => {
      it('returns the same task for a retried create and sends it to kie once', async () => {
        const before = { ...kie.simulator.stats };
        const input = sampleInput({ idempotencyKey: 'retry-1', prompt: 'hello' });
        const first = expectSuccess(await createTask(gateway, input));
        const second = expectSuccess(await createTask(gateway, input));
        expect(second.id).toBe(first.id);
        await waitForState(gateway, first.id, 'SUCCEEDED');
        const third = expectSuccess(await createTask(gateway, input));
        expect(third.id).toBe(first.id);
        expect(third.state).toBe('SUCCEEDED');
        expect(kie.simulator.stats.creates - before.creates).toBe(1);
        expect(kie.simulator.stats.createRequests - before.createRequests).toBe(1);
      });

      it.each([
        ['another prompt', { prompt: 'goodbye' }],
        ['no prompt', { prompt: undefined }],
        ['another model', { model: 'STANDARD' }],
        ['another image', { imageUrl: 'https://example.com/other.png' }],
        ['another audio', { audioUrl: 'https://example.com/other.mp3' }],
      ])('refuses the same key with %s (IDEMPOTENCY_KEY_REUSED)', async (_name, change) => {
        const input = sampleInput({ idempotencyKey: 'reused-key', prompt: 'hello' });
        const first = expectSuccess(await createTask(gateway, input, 'reuser'));
        const before = { ...kie.simulator.stats };
        const result = await createTask(gateway, { ...input, ...change }, 'reuser');
        expect(result).toMatchObject({
          __typename: 'IdempotencyKeyReusedError',
          code: 'IDEMPOTENCY_KEY_REUSED',
        });
        expect(kie.simulator.stats.createRequests).toBe(before.createRequests);
        expect((await history(gateway, 'reuser')).map((task) => task.id)).toEqual([first.id]);
      });

      it('keeps keys per user', async () => {
        const before = { ...kie.simulator.stats };
        const input = sampleInput({ idempotencyKey: 'shared-key' });
        const mine = expectSuccess(await createTask(gateway, input, 'key-user-1'));
        const theirs = expectSuccess(await createTask(gateway, input, 'key-user-2'));
        expect(theirs.id).not.toBe(mine.id);
        expect(kie.simulator.stats.creates - before.creates).toBe(2);
      });

      it('creates one task and one kie task for concurrent creates with one key', async () => {
        const before = { ...kie.simulator.stats };
        const input = sampleInput({ idempotencyKey: 'double-click' });
        const results = await Promise.all(
          Array.from({ length: 6 }, () => createTask(gateway, input, 'impatient')),
        );
        const ids = new Set(results.map((result) => expectSuccess(result).id));
        expect(ids.size).toBe(1);
        expect(await history(gateway, 'impatient')).toHaveLength(1);
        const [id] = [...ids];
        await waitForState(gateway, id ?? '', 'SUCCEEDED', 'impatient');
        expect(kie.simulator.stats.creates - before.creates).toBe(1);
        expect(kie.simulator.stats.createRequests - before.createRequests).toBe(1);
      });
    });
  });

  describe('a submit whose outcome is unknown', () => {
    let kie: SimulatorServer;
    let gateway: TestGateway;

    beforeAll(async () => {
      // kie creates the task but answers after the gateway has given up waiting.
      kie = await startSimulatorServer({ knobs: { stepMs: 150, createDelayMs: 1_000 } });
      gateway = await startTestGateway({
        database,
        kieUrl: kie.url,
        env: { KIE_CREATE_TIMEOUT_MS: '300', KIE_CONNECT_TIMEOUT_MS: '200', SUBMIT_GRACE_MS: '1000' },
      });
    });
    afterAll(async () => {
      await gateway?.stop();
      await kie?.close();
    });
    afterEach(() => {
      kie.simulator.knobs.callbackMode = 'normal';
    });

    it("is never resent, and kie's callback claims it", async () => {
      const before = { ...kie.simulator.stats };
      const created = await createTaskOk(gateway, sampleInput(), 'unsure');
      const createdAt = Date.now();
      expect(created).toMatchObject({ state: 'PENDING', upstreamTaskId: null });
      const task = await waitForState(gateway, created.id, 'SUCCEEDED', 'unsure');
      expect(task.upstreamTaskId).toMatch(/^task_kling_/);
      expect(kie.simulator.taskState(task.upstreamTaskId ?? '')).toBe('success');
      expect(sources(task)).toEqual([
        ['PENDING', 'MUTATION'],
        ['SUCCEEDED', 'CALLBACK'],
      ]);
      // Past the grace period nothing more happens: no second create, no late failure.
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, createdAt + 1_400 - Date.now())));
      expect(kie.simulator.stats.createRequests - before.createRequests).toBe(1);
      expect(kie.simulator.stats.creates - before.creates).toBe(1);
      expect((await getTask(gateway, created.id, 'unsure'))?.version).toBe(task.version);
    });

    it('ends FAILED with SUBMIT_UNCONFIRMED when no callback claims it, still sent once', async () => {
      kie.simulator.knobs.callbackMode = 'drop';
      const before = { ...kie.simulator.stats };
      const created = await createTaskOk(gateway, sampleInput(), 'unsure');
      expect(created.state).toBe('PENDING');
      const task = await waitForState(gateway, created.id, 'FAILED', 'unsure');
      expect(task.failure?.code).toBe('SUBMIT_UNCONFIRMED');
      expect(task.upstreamTaskId).toBeNull();
      expect(sources(task)).toEqual([
        ['PENDING', 'MUTATION'],
        ['FAILED', 'POLLER'],
      ]);
      expect(kie.simulator.stats.createRequests - before.createRequests).toBe(1);
    });
  });
});
