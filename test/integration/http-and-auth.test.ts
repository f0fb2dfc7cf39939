import { execFile } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { SignJWT } from 'jose';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type RunningApp, startApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import type { DatabaseHandle } from '../../src/db/connection.js';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { createTestDatabase, databaseKinds, type TestDatabase } from '../helpers/database.js';
import {
  CREATE_TASK,
  createTaskOk,
  type GraphQLResponse,
  sampleInput,
  signToken,
  startTestGateway,
  TEST_JWT_SECRET,
  type TestGateway,
} from '../helpers/gateway.js';

const encoder = new TextEncoder();

async function post(url: string, query: string, authorization?: string, variables?: Record<string, unknown>) {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  return { status: response.status, body: (await response.json()) as GraphQLResponse };
}

/** The GraphQL results of an answer: its JSON body, or each `next` event of an event stream. */
async function graphqlResults(response: Response): Promise<GraphQLResponse[]> {
  const body = await response.text();
  if (!response.headers.get('content-type')?.startsWith('text/event-stream')) return [JSON.parse(body)];
  return [...body.matchAll(/^event: next\ndata: (.+)$/gm)].map((match) => JSON.parse(match[1] ?? ''));
}

const base64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

describe.each(databaseKinds())('HTTP and auth on %s', (kind) => {
  let database: TestDatabase;
  let kie: SimulatorServer;
  let gateway: TestGateway;

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    kie = await startSimulatorServer({ knobs: { stepMs: 50 } });
    gateway = await startTestGateway({ database, kieUrl: kie.url });
  });
  afterAll(async () => {
    await gateway?.stop();
    await kie?.close();
    await database?.dispose();
  });

  describe('tokens', () => {
    it('accepts a valid token and names its subject', async () => {
      const { status, body } = await post(
        gateway.graphqlUrl,
        '{ viewer { id } }',
        `Bearer ${await signToken('alice')}`,
      );
      expect(status).toBe(200);
      expect(body).toEqual({ data: { viewer: { id: 'alice' } } });
    });

    it('answers a request without a token with UNAUTHENTICATED', async () => {
      const { status, body } = await post(gateway.graphqlUrl, '{ viewer { id } }');
      expect(status).toBe(401);
      expect(body.data ?? null).toBeNull();
      expect(body.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
      expect(body.errors?.[0]?.message).toMatch(/Bearer/);
    });

    it('creates nothing for a mutation without a token', async () => {
      const before = kie.simulator.stats.createRequests;
      const { status, body } = await post(gateway.graphqlUrl, CREATE_TASK, undefined, {
        input: sampleInput(),
      });
      expect(status).toBe(401);
      expect(body.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
      expect(kie.simulator.stats.createRequests).toBe(before);
    });

    it.each([
      ['garbage', async () => 'Bearer garbage'],
      ['another scheme', async () => `Basic ${Buffer.from('alice:pw').toString('base64')}`],
      [
        'an expired token',
        async () => `Bearer ${await signToken('alice', Math.floor(Date.now() / 1000) - 60)}`,
      ],
      [
        'another secret',
        async () =>
          `Bearer ${await new SignJWT({})
            .setProtectedHeader({ alg: 'HS256' })
            .setSubject('alice')
            .setExpirationTime('1h')
            .sign(encoder.encode('some-other-secret-that-is-long-enough-0123456789'))}`,
      ],
      [
        'no subject',
        async () =>
          `Bearer ${await new SignJWT({})
            .setProtectedHeader({ alg: 'HS256' })
            .setExpirationTime('1h')
            .sign(encoder.encode(TEST_JWT_SECRET))}`,
      ],
      [
        'an unsigned token',
        async () => `Bearer ${base64url({ alg: 'none' })}.${base64url({ sub: 'alice' })}.`,
      ],
    ])('refuses %s with 401 UNAUTHENTICATED', async (_name, authorization) => {
      const { status, body } = await post(gateway.graphqlUrl, '{ viewer { id } }', await authorization());
      expect(status).toBe(401);
      expect(body.data ?? null).toBeNull();
      expect(body.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    });

    describe.each([
      ['no token', async () => undefined],
      ['a bad token', async () => 'Bearer garbage'],
      [
        'an expired token',
        async () => `Bearer ${await signToken('alice', Math.floor(Date.now() / 1000) - 60)}`,
      ],
    ])('with %s', (_name, authorization) => {
      it.each([
        ['a query, POST', '/graphql', 'application/json', '{ viewer { id } }'],
        ['a node query, POST', '/graphql', 'application/json', '{ node(id: "bogus") { id } }'],
        ['a mutation, POST', '/graphql', 'application/json', CREATE_TASK],
        [
          'a subscription over SSE',
          '/graphql',
          'text/event-stream',
          'subscription { avatarTaskUpdated { id } }',
        ],
        ['a query over graphql-sse', '/graphql/stream', 'text/event-stream', '{ viewer { id } }'],
        [
          'a subscription over graphql-sse',
          '/graphql/stream',
          'text/event-stream',
          'subscription { avatarTaskUpdated { id } }',
        ],
      ])('answers %s with HTTP 401 and only UNAUTHENTICATED', async (_what, path, accept, query) => {
        const token = await authorization();
        const response = await fetch(new URL(path, gateway.url), {
          method: 'POST',
          headers: { 'content-type': 'application/json', accept, ...(token ? { authorization: token } : {}) },
          body: JSON.stringify({ query, variables: { input: sampleInput() } }),
        });
        expect(response.status).toBe(401);
        const results = await graphqlResults(response);
        const errors = results.flatMap((result) => result.errors ?? []);
        expect(errors.length).toBeGreaterThan(0);
        for (const error of errors) {
          // Besides the request's own id (in every JSON answer's errors), nothing but the code.
          const { requestId: _requestId, ...extensions } = error.extensions ?? {};
          expect(extensions).toEqual({ code: 'UNAUTHENTICATED' });
        }
        expect(results.flatMap((result) => Object.values(result.data ?? {}))).toEqual(
          results.flatMap((result) => Object.values(result.data ?? {}).map(() => null)),
        );
      });
    });

    it('answers introspection without a token', async () => {
      const { status, body } = await post(gateway.graphqlUrl, '{ __schema { queryType { name } } }');
      expect(status).toBe(200);
      expect(body).toEqual({ data: { __schema: { queryType: { name: 'Query' } } } });
    });

    it('answers queries over GET too', async () => {
      const url = new URL(gateway.graphqlUrl);
      url.searchParams.set('query', '{ viewer { id } }');
      const response = await fetch(url, {
        headers: { accept: 'application/json', authorization: `Bearer ${await signToken('alice')}` },
      });
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({ data: { viewer: { id: 'alice' } } });
    });
  });

  describe('routes', () => {
    it('serves /healthz and /readyz without a token', async () => {
      const health = await fetch(`${gateway.url}/healthz`);
      expect(health.status).toBe(200);
      expect(await health.json()).toEqual({ status: 'ok' });
      const ready = await fetch(`${gateway.url}/readyz`);
      expect(ready.status).toBe(200);
      expect(await ready.json()).toEqual({
        status: 'ready',
        checks: { database: true, listener: true, poller: true },
      });
    });

    it('counts upstream calls in /metrics', async () => {
      await createTaskOk(gateway);
      const response = await fetch(`${gateway.url}/metrics`);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toContain('text/plain');
      const text = await response.text();
      expect(text).toContain('# TYPE avatar_gateway_upstream_calls_total counter');
      expect(text).toMatch(
        /^avatar_gateway_upstream_calls_total\{operation="createTask",code="200"\} [1-9]/m,
      );
    });

    it('serves GraphiQL to a browser, without a token outside development mode', async () => {
      const response = await fetch(gateway.graphqlUrl, { headers: { accept: 'text/html' } });
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toContain('text/html');
      const html = await response.text();
      expect(html).toMatch(/graphiql/i);
      expect(html).not.toMatch(/Bearer ey/);
    });

    it('sends GraphiQL compressed as Accept-Encoding prefers, the same page in each encoding', async () => {
      const page = async (acceptEncoding: string) => {
        const response = await request(gateway.graphqlUrl, {
          headers: { accept: 'text/html', 'accept-encoding': acceptEncoding },
          headersTimeout: 30_000,
          bodyTimeout: 30_000,
        });
        const raw = Buffer.from(await response.body.arrayBuffer());
        const encoding = response.headers['content-encoding'] as string | undefined;
        expect(response.headers.vary).toContain('accept-encoding');
        expect(Number(response.headers['content-length'])).toBe(raw.length);
        const html =
          encoding === 'br' ? brotliDecompressSync(raw) : encoding === 'gzip' ? gunzipSync(raw) : raw;
        return { encoding, bytes: raw.length, html: html.toString('utf8') };
      };
      const plain = await page('');
      expect(plain.encoding).toBeUndefined();
      expect(plain.html).toMatch(/graphiql/i);
      for (const [accepted, expected] of [
        ['gzip, deflate, br, zstd', 'br'],
        ['gzip, deflate', 'gzip'],
        ['br;q=0, gzip', 'gzip'],
        ['br;q=0, gzip;q=0', undefined],
      ] as const) {
        const sent = await page(accepted);
        expect(sent.encoding, accepted).toBe(expected);
        expect(sent.html).toBe(plain.html);
        if (expected) expect(sent.bytes).toBeLessThan(plain.bytes / 3);
      }
    }, 60_000);

    it.runIf(kind === 'postgres')('reports not ready when its database is gone', async () => {
      const handle = await database.open();
      const dataDir = await mkdtemp(path.join(tmpdir(), 'avatar-gateway-ready-'));
      const app = await startApp(
        loadConfig({
          PORT: '0',
          HOST: '127.0.0.1',
          DATA_DIR: dataDir,
          AUTH_JWT_SECRET: TEST_JWT_SECRET,
          LOG_LEVEL: 'silent',
          KIE_API_URL: kie.url,
          KIE_API_KEY: 'test-kie-key',
        }),
        { database: handle },
      );
      try {
        expect((await fetch(`${app.url}/readyz`)).status).toBe(200);
        await handle.close();
        const ready = await fetch(`${app.url}/readyz`);
        expect(ready.status).toBe(503);
        expect((await fetch(`${app.url}/healthz`)).status).toBe(200);
      } finally {
        await app.stop();
      }
    });
  });

  describe('development mode', () => {
    let handles: DatabaseHandle[];
    let dataDir: string;

    beforeAll(async () => {
      handles = [];
      dataDir = await mkdtemp(path.join(tmpdir(), 'avatar-gateway-dev-'));
    });
    afterAll(async () => {
      for (const handle of handles) await handle.close();
    });

    // What `npm start` does with nothing configured: development auth and the built-in simulator.
    async function startDevelopment(): Promise<RunningApp> {
      const config = loadConfig({
        PORT: '0',
        HOST: '127.0.0.1',
        DATA_DIR: dataDir,
        LOG_LEVEL: 'silent',
        SIMULATOR_STEP_MS: '50',
        POLL_INTERVAL_MS: '50',
      });
      expect(config.auth.mode).toBe('development');
      const handle = await database.open();
      handles.push(handle);
      return startApp(config, { database: handle });
    }

    it('opens GraphiQL with a working token, and a task there reaches SUCCEEDED with a playable video', async () => {
      const app = await startDevelopment();
      try {
        const token = app.developmentToken ?? '';
        expect(token).toMatch(/^ey/);
        const html = await (await fetch(app.graphqlUrl, { headers: { accept: 'text/html' } })).text();
        expect(html).toContain(token);
        expect(html).toMatch(/Bearer ey/);
        expect(html).toContain('createAvatarTask');

        const viewer = await post(app.graphqlUrl, '{ viewer { id } }', `Bearer ${token}`);
        expect(viewer.body).toEqual({ data: { viewer: { id: 'developer' } } });

        // Development checks URL inputs (and the simulator downloads them): the simulator's samples pass.
        const samples = `${app.url}/simulator/samples`;
        const created = await post(app.graphqlUrl, CREATE_TASK, `Bearer ${token}`, {
          input: { imageUrl: `${samples}/face.png`, audioUrl: `${samples}/voice.wav` },
        });
        expect(created.body).toMatchObject({
          data: { createAvatarTask: { task: { estimatedCredits: 48 } } },
        });
        const task = (created.body.data as { createAvatarTask: { task: { id: string } } }).createAvatarTask
          .task;
        let videoUrl = '';
        await vi.waitFor(
          async () => {
            const result = await post(
              app.graphqlUrl,
              'query ($id: ID!) { avatarTask(id: $id) { state videoUrl } }',
              `Bearer ${token}`,
              { id: task.id },
            );
            const current = (result.body.data as { avatarTask: { state: string; videoUrl: string } })
              .avatarTask;
            expect(current.state).toBe('SUCCEEDED');
            videoUrl = current.videoUrl;
          },
          { timeout: 10_000, interval: 25 },
        );
        // The built-in simulator's video is served by the gateway itself.
        expect(videoUrl.startsWith(app.publicUrl)).toBe(true);
        const video = await fetch(videoUrl.replace(app.publicUrl, app.url));
        expect(video.status).toBe(200);
        expect(video.headers.get('content-type')).toBe('video/mp4');
      } finally {
        await app.stop();
      }
    });

    it('prints only the token on stdout for `npm run -s token`, and the gateway takes it', async () => {
      const printed = await promisify(execFile)('npm', ['run', '-s', 'token', '--', 'alice'], {
        cwd: fileURLToPath(new URL('../..', import.meta.url)),
        env: { PATH: process.env.PATH ?? '', DATA_DIR: dataDir },
        timeout: 60_000,
      });
      expect(printed.stdout).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+\n$/);
      expect(printed.stderr).toContain('Authorization: Bearer');
      const app = await startDevelopment();
      try {
        const viewer = await post(app.graphqlUrl, '{ viewer { id } }', `Bearer ${printed.stdout.trim()}`);
        expect(viewer.body).toEqual({ data: { viewer: { id: 'alice' } } });
      } finally {
        await app.stop();
      }
    }, 90_000);

    it('keeps accepting its development tokens after a restart', async () => {
      const first = await startDevelopment();
      const token = first.developmentToken ?? '';
      await first.stop();
      const second = await startDevelopment();
      try {
        const viewer = await post(second.graphqlUrl, '{ viewer { id } }', `Bearer ${token}`);
        expect(viewer.body).toEqual({ data: { viewer: { id: 'developer' } } });
        // Tokens from the test secret are not development tokens.
        const foreign = await post(
          second.graphqlUrl,
          '{ viewer { id } }',
          `Bearer ${await signToken('alice')}`,
        );
        expect(foreign.status).toBe(401);
      } finally {
        await second.stop();
      }
    });
  });
});
