import { createHmac, randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { sql } from 'drizzle-orm';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { databaseKinds, useTestDatabase } from '../helpers/database.js';
import {
  CREATE_TASK,
  createTaskOk,
  sampleInput,
  signToken,
  startTestGateway,
  type TestGateway,
} from '../helpers/gateway.js';
import { taskRow } from '../helpers/subscriptions.js';

const HMAC_KEY = 'log-hygiene-webhook-key';

/** Everything a real gateway wrote to its log, as the text a log collector would receive. */
class LogCapture extends Writable {
  text = '';
  override _write(chunk: Buffer, _encoding: string, done: () => void) {
    this.text += chunk.toString('utf8');
    done();
  }
  lines(): Array<Record<string, unknown>> {
    return this.text
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  }
}

/** The values that must never reach a log, and where each one was found. */
function leaks(log: string, secrets: Record<string, string>): string[] {
  return Object.entries(secrets)
    .filter(([, value]) => log.includes(value))
    .map(([name]) => name);
}

describe.each(databaseKinds())('log lines on %s', (kind) => {
  const database = useTestDatabase(kind);
  const capture = new LogCapture();
  let gateway: TestGateway;

  beforeAll(async () => {
    gateway = await startTestGateway({
      database,
      // The most the gateway ever logs.
      logger: pino({ level: 'debug' }, capture),
      // Tasks stay WAITING, so a success callback has something to store.
      env: { KIE_WEBHOOK_HMAC_KEY: HMAC_KEY, SIMULATOR_STEP_MS: '600000' },
    });
  });
  afterAll(async () => {
    await gateway?.stop();
  });

  /** A check on the tasks table that refuses one value, so the gateway's own statement fails in Postgres. */
  async function refuse(column: string, value: string) {
    const name = `refuse_${randomUUID().replaceAll('-', '')}`;
    await gateway.app.database.db.execute(
      sql.raw(
        `alter table avatar_tasks add constraint ${name} check (${column}::text not like '%${value}%')`,
      ),
    );
    return () => gateway.app.database.db.execute(sql.raw(`alter table avatar_tasks drop constraint ${name}`));
  }

  it('a database error is logged without its query parameters', async () => {
    const user = `user-${randomUUID()}`;
    const idempotencyKey = `key-${randomUUID()}`;
    const imageUrl = `https://example.com/${randomUUID()}.png`;
    const allow = await refuse('idempotency_key', idempotencyKey);
    const before = capture.text.length;
    const result = await gateway.gql(CREATE_TASK, { input: sampleInput({ idempotencyKey, imageUrl }) }, user);
    await allow();
    expect(result.errors?.[0]?.message).toBe('Unexpected error.');

    const log = capture.text.slice(before);
    const errors = capture.lines().filter((line) => line.level === 50);
    console.log(`database error: ${errors.length} error line(s), ${log.length} bytes of log`);
    expect(log).toContain('23514'); // the check violation's code is still there to debug with
    expect(leaks(log, { user, idempotencyKey, imageUrl, 'a params list': 'params:' })).toEqual([]);
    expect(log).not.toContain('Failing row');
  });

  it('a bad callback is logged without the callback secret, signature or payload', async () => {
    const task = await createTaskOk(gateway, sampleInput(), `user-${randomUUID()}`);
    const row = await taskRow(gateway, task.id);
    const upstreamTaskId = row.upstreamTaskId ?? '';
    const resultUrl = `https://cdn.example.com/${randomUUID()}.mp4`;
    const timestamp = String(Math.floor(Date.now() / 1000));
    const signature = createHmac('sha256', HMAC_KEY)
      .update(`${upstreamTaskId}.${timestamp}`)
      .digest('base64');
    const forged = createHmac('sha256', 'not-the-key')
      .update(`${upstreamTaskId}.${timestamp}`)
      .digest('base64');
    const wrongSecret = `wrong${randomUUID().replaceAll('-', '')}`;
    const body = JSON.stringify({
      code: 200,
      data: {
        taskId: upstreamTaskId,
        state: 'success',
        resultJson: JSON.stringify({ resultUrls: [resultUrl] }),
      },
    });
    const post = async (secret: string, sig: string, payload = body) => {
      const response = await fetch(`${gateway.url}/callbacks/kie/${row.id}/${secret}`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'x-webhook-timestamp': timestamp,
          'x-webhook-signature': sig,
        },
        body: payload,
      });
      await response.arrayBuffer();
      return response.status;
    };
    const before = capture.text.length;
    const statuses = [await post(wrongSecret, signature), await post(row.callbackSecret, forged)];
    statuses.push(await post(row.callbackSecret, signature, '{"data":'));
    // A genuine callback the database refuses to store: the sender gets 503 and the error is logged.
    const allow = await refuse('result_urls', resultUrl);
    statuses.push(await post(row.callbackSecret, signature));
    await allow();

    const log = capture.text.slice(before);
    console.log(`bad callbacks answered ${statuses.join(', ')}; ${log.length} bytes of log`);
    expect(statuses).toEqual([401, 401, 400, 503]);
    expect(log).toContain('callback could not be stored');
    expect(
      leaks(log, {
        'the callback secret': row.callbackSecret,
        'a wrong secret': wrongSecret,
        'the signature': signature,
        'a forged signature': forged,
        'the result URL': resultUrl,
      }),
    ).toEqual([]);
  });

  it("work a callback wakes in the background does not log under the callback's request id", async () => {
    const task = await createTaskOk(gateway, sampleInput(), `user-${randomUUID()}`);
    const row = await taskRow(gateway, task.id);
    const upstreamTaskId = row.upstreamTaskId ?? '';
    const timestamp = String(Math.floor(Date.now() / 1000));
    const requestId = `callback-${randomUUID()}`;
    const response = await fetch(`${gateway.url}/callbacks/kie/${row.id}/${row.callbackSecret}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-request-id': requestId,
        'x-webhook-timestamp': timestamp,
        'x-webhook-signature': createHmac('sha256', HMAC_KEY)
          .update(`${upstreamTaskId}.${timestamp}`)
          .digest('base64'),
      },
      // Nothing listens on port 1: the copy the success wakes fails at once, and says so in the log.
      body: JSON.stringify({
        code: 200,
        data: {
          taskId: upstreamTaskId,
          state: 'success',
          resultJson: { resultUrls: ['http://127.0.0.1:1/v.mp4'] },
        },
      }),
    });
    await response.arrayBuffer();
    expect(response.status).toBe(200);
    const copyLine = () =>
      capture
        .lines()
        .find((line) => line.taskId === row.id && /copying a result failed/.test(String(line.msg)));
    await expect.poll(copyLine, { timeout: 10_000, interval: 50 }).toBeDefined();
    // The copier's lines belong to no request: under the callback's id, every later copy would claim it too.
    expect(copyLine()?.requestId).toBeUndefined();
  });

  it('a bad token is logged without the token', async () => {
    const foreign = await new (await import('jose')).SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(`user-${randomUUID()}`)
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode('some-other-identity-provider-secret-0123456789'));
    const garbage = `garbage${randomUUID().replaceAll('-', '')}`;
    const valid = await signToken(`user-${randomUUID()}`);
    const before = capture.text.length;
    for (const token of [foreign, garbage]) {
      const response = await fetch(gateway.graphqlUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ query: '{ viewer { id } }' }),
      });
      await response.arrayBuffer();
      const stream = await fetch(gateway.graphqlUrl, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'text/event-stream',
          authorization: `Bearer ${token}`,
        },
        body: JSON.stringify({ query: 'subscription { avatarTaskUpdated { id } }' }),
      });
      await stream.arrayBuffer();
      const socket = new WebSocket(gateway.wsUrl, 'graphql-transport-ws');
      await new Promise((resolve) => socket.once('open', resolve));
      socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } }));
      await new Promise((resolve) => socket.once('close', resolve));
    }
    // A good token's operation, whose processing is logged at debug level.
    const ok = await fetch(gateway.graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${valid}` },
      body: JSON.stringify({ query: '{ viewer { id } }' }),
    });
    await ok.arrayBuffer();

    const log = capture.text.slice(before);
    console.log(`bad tokens over HTTP, SSE and graphql-ws: ${log.length} bytes of log`);
    expect(
      leaks(log, { 'a foreign token': foreign, 'a garbage token': garbage, 'a valid token': valid }),
    ).toEqual([]);
  });
});
