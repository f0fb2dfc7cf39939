import { connect, type Socket } from 'node:net';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { signToken, TEST_JWT_SECRET } from '../helpers/gateway.js';
import { connectWs, subscribeFetchSse, TASK_UPDATED } from '../helpers/subscriptions.js';
import { type ProductionGateway, rawRequest, startProductionGateway } from './production-gateway.js';

const APP_ORIGIN = 'https://app.example.com';
const METRICS_TOKEN = 'metrics-token-0123456789abcdef';

const post = async (gateway: ProductionGateway, query: string, headers: Record<string, string> = {}) => {
  const response = await fetch(gateway.graphqlUrl, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      authorization: `Bearer ${await signToken('alice')}`,
      ...headers,
    },
    body: JSON.stringify({ query }),
  });
  return {
    response,
    body: (await response.json()) as { data?: unknown; errors?: Array<{ message: string }> },
  };
};

const corsHeaders = (response: Response) =>
  Object.fromEntries([...response.headers].filter(([name]) => name.startsWith('access-control-')));

function expectSecurityHeaders(headers: Headers) {
  expect(headers.get('x-content-type-options')).toBe('nosniff');
  expect(headers.get('x-frame-options')).toBe('DENY');
  expect(headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
  expect(headers.get('referrer-policy')).toBe('no-referrer');
}

function upgrade(gateway: ProductionGateway, origin: string): Promise<number> {
  return new Promise((resolve) => {
    const socket = new WebSocket(gateway.wsUrl, 'graphql-transport-ws', { origin });
    socket.on('open', () => {
      socket.close();
      resolve(101);
    });
    socket.on('unexpected-response', (_request, response) => resolve(response.statusCode ?? 0));
    socket.on('error', () => {});
  });
}

/**
 * seen 10, with no edge variable set. Limits proved: in production GraphiQL (GRAPHIQL_ENABLED), introspection
 * and "Did you mean" suggestions (INTROSPECTION_ENABLED) are off; no origin gets CORS access (CORS_ORIGINS);
 * /metrics is not served without METRICS_TOKEN; every response carries the security headers; a token without
 * `exp`, or living longer than AUTH_MAX_TOKEN_LIFETIME_S (a day), is refused.
 */
describe('production defaults at the edge', () => {
  let gateway: ProductionGateway;
  beforeAll(async () => {
    gateway = await startProductionGateway();
  });
  afterAll(async () => {
    await gateway?.stop();
  });

  it('serves no GraphiQL page', async () => {
    const response = await fetch(gateway.graphqlUrl, { headers: { accept: 'text/html' } });
    expect(await response.text()).not.toMatch(/graphiql/i);
  });

  it('refuses introspection over HTTP and graphql-ws, and hides field suggestions', async () => {
    const { body } = await post(gateway, '{ __schema { types { name } } }');
    expect(body.data ?? null).toBeNull();
    expect(body.errors?.[0]?.message).toMatch(/introspection/i);

    const socket = await connectWs(gateway, 'alice');
    const received = socket.subscribe({ query: '{ __schema { queryType { name } } }' });
    await received.waitForEnd();
    expect(received.data).toEqual([]);
    await socket.dispose();

    const typo = await post(gateway, '{ viewr { id } }');
    expect(typo.body.errors?.[0]?.message).toMatch(/Cannot query field "viewr"/);
    expect(JSON.stringify(typo.body.errors)).not.toContain('Did you mean');
  });

  it('gives no origin CORS access, neither on JSON, a preflight nor a stream, and never reflects null', async () => {
    for (const origin of ['https://evil.example', 'null']) {
      const { response } = await post(gateway, '{ viewer { id } }', { origin });
      expect(corsHeaders(response)).toEqual({});
      const preflight = await fetch(gateway.graphqlUrl, {
        method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'POST' },
      });
      expect(corsHeaders(preflight)).toEqual({});
    }
    const abort = new AbortController();
    const stream = await fetch(gateway.graphqlUrl, {
      method: 'POST',
      headers: {
        accept: 'text/event-stream',
        'content-type': 'application/json',
        authorization: `Bearer ${await signToken('alice')}`,
        origin: 'https://evil.example',
      },
      body: JSON.stringify({ query: TASK_UPDATED }),
      signal: abort.signal,
    });
    expect(stream.headers.get('content-type')).toBe('text/event-stream');
    expect(corsHeaders(stream)).toEqual({});
    abort.abort();
    expect(await upgrade(gateway, 'https://evil.example')).toBe(403);
  });

  it('does not serve /metrics without METRICS_TOKEN', async () => {
    const response = await fetch(`${gateway.url}/metrics`);
    expect(response.status).toBe(404);
    expect(await response.text()).not.toContain('# HELP');
  });

  it('sends the security headers on every kind of response', async () => {
    expectSecurityHeaders((await fetch(`${gateway.url}/healthz`)).headers);
    expectSecurityHeaders((await post(gateway, '{ viewer { id } }')).response.headers);
    // The lean SSE transport writes its stream's headers at once, not through the routes' setHeader.
    const stream = await subscribeFetchSse(gateway, 'alice', { query: TASK_UPDATED });
    const { contentType, headers } = await stream.response;
    stream.stop();
    expect(contentType).toBe('text/event-stream');
    expectSecurityHeaders(headers);
    expect(headers.get('x-request-id')).toMatch(/^[A-Za-z0-9._:-]{8,128}$/);
    // And on its answers that are not a stream: a subscription refused before it starts.
    const refused = await subscribeFetchSse(gateway, null, { query: TASK_UPDATED });
    const refusal = await refused.response;
    refused.stop();
    expect(refusal.status).not.toBe(200);
    expectSecurityHeaders(refusal.headers);
    const answer = await rawRequest(
      gateway.url,
      'GET /healthz HTTP/1.1\r\nHost: x/y\r\nConnection: close\r\n\r\n',
    );
    expect(answer.toLowerCase()).toContain('x-content-type-options: nosniff');
  });

  it('refuses a token without exp, and one that lives longer than a day', async () => {
    const secret = new TextEncoder().encode(TEST_JWT_SECRET);
    const forever = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('alice')
      .sign(secret);
    const { response } = await post(gateway, '{ viewer { id } }', { authorization: `Bearer ${forever}` });
    expect(response.status).toBe(401);
    const yearLong = await signToken('alice', '365d');
    expect(
      (await post(gateway, '{ viewer { id } }', { authorization: `Bearer ${yearLong}` })).response.status,
    ).toBe(401);
  });
});

/**
 * seen 10, configured. Limits proved: CORS_ORIGINS (only listed origins, exactly, no credentials unless
 * CORS_CREDENTIALS), METRICS_TOKEN (bearer, compared in constant time), HSTS behind an https PUBLIC_URL,
 * HTTP_HEADERS_TIMEOUT_MS and HTTP_REQUEST_TIMEOUT_MS (slow headers and bodies cut in seconds, not 60 s and
 * 300 s), HTTP_MAX_CONNECTIONS.
 */
describe('configured edge', () => {
  let gateway: ProductionGateway;
  beforeAll(async () => {
    gateway = await startProductionGateway({
      CORS_ORIGINS: `${APP_ORIGIN}, https://admin.example.com`,
      METRICS_TOKEN,
      PUBLIC_URL: 'https://gateway.example.com',
      HTTP_HEADERS_TIMEOUT_MS: '2000',
      HTTP_REQUEST_TIMEOUT_MS: '3000',
      HTTP_MAX_CONNECTIONS: '20',
    });
  });
  afterAll(async () => {
    await gateway?.stop();
  });

  it('answers a listed origin with itself, and nobody else', async () => {
    const { response } = await post(gateway, '{ viewer { id } }', { origin: APP_ORIGIN });
    expect(corsHeaders(response)).toMatchObject({ 'access-control-allow-origin': APP_ORIGIN });
    expect(response.headers.get('access-control-allow-credentials')).toBeNull();
    for (const origin of ['https://evil.example', 'null', 'https://app.example.com.evil.example']) {
      expect(corsHeaders((await post(gateway, '{ viewer { id } }', { origin })).response)).toEqual({});
    }
    const preflight = await fetch(gateway.graphqlUrl, {
      method: 'OPTIONS',
      headers: {
        origin: APP_ORIGIN,
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization, content-type',
      },
    });
    expect(corsHeaders(preflight)).toMatchObject({
      'access-control-allow-origin': APP_ORIGIN,
      'access-control-allow-methods': 'POST',
      'access-control-allow-headers': 'authorization, content-type',
    });
    expect(await upgrade(gateway, APP_ORIGIN)).toBe(101);
    expect(await upgrade(gateway, 'https://evil.example')).toBe(403);
  });

  it('serves /metrics only with the bearer token', async () => {
    expect((await fetch(`${gateway.url}/metrics`)).status).toBe(401);
    const wrong = await fetch(`${gateway.url}/metrics`, { headers: { authorization: 'Bearer nope' } });
    expect(wrong.status).toBe(401);
    const right = await fetch(`${gateway.url}/metrics`, {
      headers: { authorization: `Bearer ${METRICS_TOKEN}` },
    });
    expect(right.status).toBe(200);
    expect(await right.text()).toContain('# HELP');
  });

  it('sends HSTS when reached over https', async () => {
    expect((await fetch(`${gateway.url}/healthz`)).headers.get('strict-transport-security')).toMatch(
      /max-age=\d+/,
    );
  });

  it('cuts slow headers and slow bodies within seconds', async () => {
    let started = Date.now();
    const slowHeaders = await rawRequest(gateway.url, 'GET /healthz HTTP/1.1\r\nHost: x\r\n', 15_000);
    expect(Date.now() - started).toBeLessThan(8_000);
    expect(slowHeaders).not.toContain('200 OK');
    started = Date.now();
    const slowBody = await rawRequest(
      gateway.url,
      'POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"query":',
      15_000,
    );
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(slowBody).not.toContain('200 OK');
  });

  it('refuses connections past HTTP_MAX_CONNECTIONS', async () => {
    const sockets: Socket[] = [];
    const closed = new Set<Socket>();
    for (let index = 0; index < 40; index++) {
      const socket = connect(Number(new URL(gateway.url).port), '127.0.0.1');
      socket.on('close', () => closed.add(socket));
      socket.on('error', () => {});
      sockets.push(socket);
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(closed.size).toBeGreaterThanOrEqual(20);
    for (const socket of sockets) socket.destroy();
  });
});
