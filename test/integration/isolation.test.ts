import { randomUUID } from 'node:crypto';
import { encodeGlobalID } from '@pothos/plugin-relay';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { createTestDatabase, databaseKinds, type TestDatabase } from '../helpers/database.js';
import {
  createTaskOk,
  sampleInput,
  startTestGateway,
  TASK_FIELDS,
  type TaskView,
  type TestGateway,
} from '../helpers/gateway.js';

const BY_ID = `query ById($id: ID!) {
  avatarTask(id: $id) { ${TASK_FIELDS} }
  node(id: $id) { __typename id ... on AvatarTask { state upstreamTaskId } }
}`;

const LIST = `query List($after: String, $states: [AvatarTaskState!]) {
  avatarTasks(first: 100, after: $after, states: $states) {
    edges { cursor node { id } }
    pageInfo { hasNextPage endCursor }
  }
}`;

interface ListResult {
  avatarTasks: {
    edges: Array<{ cursor: string; node: { id: string } }>;
    pageInfo: { hasNextPage: boolean; endCursor: string | null };
  };
}

describe.each(databaseKinds())('users are isolated on %s', (kind) => {
  let database: TestDatabase;
  let kie: SimulatorServer;
  let gateway: TestGateway;
  let alices: TaskView;
  let bobs: TaskView;

  const byId = (id: string, user: string) => gateway.gql(BY_ID, { id }, user);
  const list = async (user: string, variables: Record<string, unknown> = {}) => {
    const result = await gateway.gql<ListResult>(LIST, variables, user);
    if (!result.data) throw new Error(`avatarTasks failed: ${JSON.stringify(result.errors)}`);
    return result.data.avatarTasks;
  };
  const ids = (page: ListResult['avatarTasks']) => page.edges.map((edge) => edge.node.id);

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    kie = await startSimulatorServer({ knobs: { stepMs: 50 } });
    gateway = await startTestGateway({ database, kieUrl: kie.url });
    alices = await createTaskOk(gateway, sampleInput({ prompt: 'alice', idempotencyKey: 'k-1' }), 'alice');
    bobs = await createTaskOk(gateway, sampleInput({ prompt: 'bob' }), 'bob');
  });
  afterAll(async () => {
    await gateway?.stop();
    await kie?.close();
    await database?.dispose();
  });

  it('shows a user their own task by id, by node and in their list', async () => {
    const result = await byId(alices.id, 'alice');
    expect(result.errors).toBeUndefined();
    expect(result.data).toMatchObject({
      avatarTask: { id: alices.id, prompt: 'alice' },
      node: { __typename: 'AvatarTask', id: alices.id },
    });
    expect(ids(await list('alice'))).toEqual([alices.id]);
  });

  it("answers another user's task id exactly like an id that does not exist", async () => {
    const stolen = await byId(alices.id, 'bob');
    expect(stolen).toEqual({ data: { avatarTask: null, node: null } });
    const missing = await byId(encodeGlobalID('AvatarTask', randomUUID()), 'bob');
    expect(missing).toEqual(stolen);
  });

  it.each([
    ['no global id at all', 'bogus'],
    ['base64 without a type', Buffer.from('no-colon').toString('base64')],
    ['an id of a type that is no node', encodeGlobalID('Viewer', 'bob')],
    ['an id of a type that does not exist', encodeGlobalID('Nothing', '1')],
    ['an AvatarTask id that is no uuid', encodeGlobalID('AvatarTask', 'not-a-uuid')],
  ])('answers %s like a missing task on avatarTask and node alike, with no error', async (_name, id) => {
    expect(await byId(id, 'bob')).toEqual({ data: { avatarTask: null, node: null } });
  });

  it("never lists another user's task, with any filter or cursor", async () => {
    expect(ids(await list('bob'))).toEqual([bobs.id]);
    for (const states of [
      ['PENDING', 'WAITING', 'QUEUING', 'GENERATING'],
      ['SUCCEEDED', 'FAILED'],
    ]) {
      expect(ids(await list('bob', { states }))).not.toContain(alices.id);
    }
    // Alice's cursor only positions Bob in his own list.
    const cursor = (await list('alice')).edges[0]?.cursor;
    expect(ids(await list('bob', { after: cursor }))).not.toContain(alices.id);
    expect(ids(await list('carol'))).toEqual([]);
  });

  it("does not hand out another user's task through their idempotency key", async () => {
    const mine = await createTaskOk(gateway, sampleInput({ prompt: 'alice', idempotencyKey: 'k-1' }), 'bob');
    expect(mine.id).not.toBe(alices.id);
    expect(mine.upstreamTaskId).not.toBe(alices.upstreamTaskId);
    expect(ids(await list('alice'))).toEqual([alices.id]);
  });

  it('tells each user who they are', async () => {
    expect((await gateway.gql('{ viewer { id } }', {}, 'alice')).data).toEqual({ viewer: { id: 'alice' } });
    expect((await gateway.gql('{ viewer { id } }', {}, 'bob')).data).toEqual({ viewer: { id: 'bob' } });
  });
});
