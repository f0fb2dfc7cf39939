import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SignJWT } from 'jose';
import type { Logger } from 'pino';
import { expect, vi } from 'vitest';
import { type RunningApp, startApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import type { TestDatabase } from './database.js';

export const TEST_JWT_SECRET = 'avatar-gateway-test-secret-0123456789-abcdef';

/** A user token as an identity provider would issue it (HS256 with the test secret). */
export function signToken(
  userId: string,
  expiresIn: string | number = '1h',
  claims: Record<string, unknown> = {},
): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(userId)
    .setIssuedAt()
    .setExpirationTime(expiresIn)
    .sign(new TextEncoder().encode(TEST_JWT_SECRET));
}

export interface GraphQLResponse<T = Record<string, unknown>> {
  data?: T | null;
  errors?: Array<{ message: string; extensions?: Record<string, unknown> }>;
}

export interface TestGateway {
  app: RunningApp;
  url: string;
  graphqlUrl: string;
  wsUrl: string;
  /** POST a GraphQL operation as `user` (a user id, signed here) or with no token when user is null. */
  gql<T = Record<string, unknown>>(
    query: string,
    variables?: Record<string, unknown>,
    user?: string | null,
  ): Promise<GraphQLResponse<T>>;
  stop(): Promise<void>;
}

export interface TestGatewayOptions {
  /**
   * The test's database; without it the gateway opens its own from `env.DATABASE_URL`, with the deadlines and
   * pool its configuration gives (the fault tests point it at a proxy).
   */
  database?: TestDatabase;
  /** A standalone simulator's URL; without it the gateway mounts its built-in simulator. */
  kieUrl?: string;
  env?: Record<string, string>;
  /** Where the gateway logs; without it, nowhere (LOG_LEVEL silent). */
  logger?: Logger;
  /**
   * The built-in simulator downloads each task's inputs, as kie does; off by default, so that the placeholder
   * URLs of sampleInput() (which exist nowhere on a machine without internet) can stand for real ones.
   */
  simulatorChecksInputs?: boolean;
}

/** A real gateway on a free port, configured through the same environment parsing as `npm start`. */
export async function startTestGateway(options: TestGatewayOptions): Promise<TestGateway> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'avatar-gateway-test-'));
  const config = loadConfig({
    NODE_ENV: 'test',
    PORT: '0',
    HOST: '127.0.0.1',
    DATA_DIR: dataDir,
    AUTH_JWT_SECRET: TEST_JWT_SECRET,
    LOG_LEVEL: 'silent',
    POLL_INTERVAL_MS: '50',
    POLL_MIN_DELAY_MS: '60000',
    SIMULATOR_STEP_MS: '50',
    KIE_REQUEST_TIMEOUT_MS: '2000',
    // Tests make many tasks for one user; the quota tests set their own caps.
    MAX_ACTIVE_TASKS_PER_USER: '100000',
    MAX_CREATES_PER_USER_PER_HOUR: '100000',
    // And a file's tests make more than kie's 20 creates in 10 s: past them a create is queued and sent by the
    // poller's turn, not the mutation's. The tests of the create window set their own.
    KIE_MAX_CREATES_PER_10S: '1000',
    // Likewise the gateway's own check of URL inputs; the tests of that check turn it on.
    CHECK_INPUT_URLS: 'false',
    ...(options.kieUrl
      ? { KIE_API_URL: options.kieUrl, KIE_UPLOAD_URL: options.kieUrl, KIE_API_KEY: 'test-kie-key' }
      : {}),
    ...options.env,
  });
  const database = await options.database?.open();
  const app = await startApp(config, {
    ...(database ? { database } : {}),
    ...(options.logger ? { logger: options.logger } : {}),
  });
  if (app.simulator) app.simulator.knobs.checkInputUrls = options.simulatorChecksInputs ?? false;
  const gql: TestGateway['gql'] = async (query, variables, user = 'alice') => {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (user !== null) headers.authorization = `Bearer ${await signToken(user)}`;
    const response = await fetch(app.graphqlUrl, {
      method: 'POST',
      headers,
      body: JSON.stringify({ query, variables }),
    });
    return (await response.json()) as GraphQLResponse<never>;
  };
  return {
    app,
    url: app.url,
    graphqlUrl: app.graphqlUrl,
    wsUrl: app.graphqlUrl.replace(/^http/, 'ws'),
    gql,
    stop: async () => {
      await app.stop();
      await database?.close();
    },
  };
}

/** A video URL the API may give for a SUCCEEDED task: kie's (the simulator's), or the gateway's own copy. */
export const VIDEO_URL =
  /\/results\/task_kling_.+\.mp4$|\/media\/[0-9a-f-]{36}\/\d+\.mp4\?expires=\d+&signature=/;

export const TASK_FIELDS = `id state model imageUrl audioUrl prompt estimatedCredits upstreamTaskId resultUrls videoUrl version creditsCharged
  failure { code message } createdAt updatedAt completedAt events { state source version at message }`;

export interface TaskView {
  id: string;
  state: string;
  upstreamTaskId: string | null;
  resultUrls: string[];
  videoUrl: string | null;
  version: number;
  creditsCharged: number | null;
  failure: { code: string; message: string } | null;
  events: Array<{ state: string; source: string; version: number; at: string; message: string | null }>;
  [field: string]: unknown;
}

export const CREATE_TASK = `mutation Create($input: CreateAvatarTaskInput!) {
  createAvatarTask(input: $input) {
    __typename
    ... on CreateAvatarTaskSuccess { task { ${TASK_FIELDS} } }
    ... on Error { code message }
    ... on InvalidInputError { field }
    ... on RateLimitedError { retryAfterSeconds }
  }
}`;

export const sampleInput = (overrides: Record<string, unknown> = {}) => ({
  imageUrl: 'https://example.com/face.png',
  audioUrl: 'https://example.com/voice.mp3',
  ...overrides,
});

export type CreateResult =
  | { __typename: 'CreateAvatarTaskSuccess'; task: TaskView }
  | { __typename: string; code: string; message: string; field?: string; retryAfterSeconds?: number };

export async function createTask(
  gateway: TestGateway,
  input: Record<string, unknown> = sampleInput(),
  user = 'alice',
): Promise<CreateResult> {
  const result = await gateway.gql<{ createAvatarTask: CreateResult }>(CREATE_TASK, { input }, user);
  if (!result.data) throw new Error(`createAvatarTask failed: ${JSON.stringify(result.errors)}`);
  return result.data.createAvatarTask;
}

/** Creates a task and fails the test unless it was created. */
export async function createTaskOk(gateway: TestGateway, input?: Record<string, unknown>, user = 'alice') {
  const result = await createTask(gateway, input, user);
  if (result.__typename !== 'CreateAvatarTaskSuccess' || !('task' in result)) {
    throw new Error(`expected a created task, got ${JSON.stringify(result)}`);
  }
  return result.task;
}

export const CANCEL_TASK = `mutation Cancel($id: ID!) {
  cancelAvatarTask(id: $id) {
    __typename
    ... on CancelAvatarTaskSuccess { task { ${TASK_FIELDS} } }
    ... on Error { code message }
    ... on AlreadySubmittedError { task { ${TASK_FIELDS} } }
  }
}`;

export type CancelResult =
  | { __typename: 'CancelAvatarTaskSuccess'; task: TaskView }
  | { __typename: 'AlreadySubmittedError'; code: string; message: string; task: TaskView }
  | { __typename: string; code: string; message: string };

export async function cancelTask(gateway: TestGateway, id: string, user = 'alice'): Promise<CancelResult> {
  const result = await gateway.gql<{ cancelAvatarTask: CancelResult }>(CANCEL_TASK, { id }, user);
  if (!result.data) throw new Error(`cancelAvatarTask failed: ${JSON.stringify(result.errors)}`);
  return result.data.cancelAvatarTask;
}

/**
 * The value of one Prometheus series on this instance's /metrics, named exactly as exported, e.g.
 * 'avatar_gateway_callbacks_total{status="200"}'. A labelled counter not yet incremented is not exported:
 * it reads 0, as Prometheus would.
 */
export async function metric(gateway: Pick<TestGateway, 'url'>, series: string): Promise<number> {
  const text = await (await fetch(`${gateway.url}/metrics`)).text();
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${series} `));
  return Number(line?.split(' ')[1] ?? 0);
}

export async function getTask(gateway: TestGateway, id: string, user = 'alice'): Promise<TaskView | null> {
  const result = await gateway.gql<{ avatarTask: TaskView | null }>(
    `query Task($id: ID!) { avatarTask(id: $id) { ${TASK_FIELDS} } }`,
    { id },
    user,
  );
  if (!result.data) throw new Error(`avatarTask failed: ${JSON.stringify(result.errors)}`);
  return result.data.avatarTask;
}

/** Waits until the user sees the task in `state` (the API's view, over HTTP) and returns it. */
export async function waitForState(gateway: TestGateway, id: string, state: string, user = 'alice') {
  let task: TaskView | null = null;
  await vi.waitFor(
    async () => {
      task = await getTask(gateway, id, user);
      expect(task?.state).toBe(state);
    },
    { timeout: 10_000, interval: 25 },
  );
  return task as unknown as TaskView;
}

/** A file part of a multipart request, named and typed as a client would send it (the gateway ignores both). */
export interface UploadPart {
  bytes: Uint8Array<ArrayBuffer>;
  fileName: string;
  type: string;
}

/**
 * POSTs an operation as a GraphQL multipart request (the spec curl -F and browser FormData follow): the
 * operation in `operations`, each file under a number in `map` naming the variable it fills.
 */
export async function postMultipart(
  gateway: Pick<TestGateway, 'graphqlUrl'>,
  operation: { query: string; variables: Record<string, unknown> },
  files: Record<string, UploadPart>,
  user: string | null = 'alice',
): Promise<Response> {
  const form = new FormData();
  const paths = Object.keys(files);
  form.append('operations', JSON.stringify(operation));
  form.append('map', JSON.stringify(Object.fromEntries(paths.map((path, index) => [String(index), [path]]))));
  paths.forEach((path, index) => {
    const part = files[path] as UploadPart;
    form.append(String(index), new Blob([part.bytes], { type: part.type }), part.fileName);
  });
  const headers: Record<string, string> = {};
  if (user !== null) headers.authorization = `Bearer ${await signToken(user)}`;
  return fetch(gateway.graphqlUrl, { method: 'POST', headers, body: form });
}

/** createAvatarTask with its image and/or audio uploaded in the request instead of given as URLs. */
export async function createTaskWithUploads(
  gateway: TestGateway,
  files: { image?: UploadPart; audio?: UploadPart },
  input: Record<string, unknown> = {},
  user = 'alice',
): Promise<CreateResult> {
  const parts: Record<string, UploadPart> = {};
  const variables = { input: { ...input } as Record<string, unknown> };
  for (const field of ['image', 'audio'] as const) {
    const part = files[field];
    if (!part) continue;
    variables.input[field] = null;
    parts[`variables.input.${field}`] = part;
  }
  const response = await postMultipart(gateway, { query: CREATE_TASK, variables }, parts, user);
  const result = (await response.json()) as GraphQLResponse<{ createAvatarTask: CreateResult }>;
  if (!result.data)
    throw new Error(`createAvatarTask failed (${response.status}): ${JSON.stringify(result.errors)}`);
  return result.data.createAvatarTask;
}
