import { createServer, type IncomingMessage, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { readNodeBody } from '../../src/http/request-body.js';

const CAP = 1_000;
const EVENTS = ['data', 'end', 'error', 'close', 'finish', 'readable'] as const;

type Outcome = { body: string | null } | { error: string };

let server: Server | undefined;
afterEach(async () => {
  await new Promise((resolve) => server?.close(resolve) ?? resolve(undefined));
  server = undefined;
});

/**
 * A real server that reads each request's body with readNodeBody and answers 200 with it, or 413 over the cap;
 * each outcome, and the request's listener counts before and after the read, are handed to the test.
 */
async function bodyServer() {
  const outcomes: Array<{ outcome: Outcome; listenersBefore: number[]; listenersAfter: number[] }> = [];
  const waiters: Array<() => void> = [];
  const count = (req: IncomingMessage) => EVENTS.map((event) => req.listenerCount(event));
  server = createServer(async (req, res) => {
    const listenersBefore = count(req);
    let outcome: Outcome;
    try {
      const body = await readNodeBody(req, CAP);
      outcome = { body: body === null ? null : body.toString('utf8') };
    } catch (error) {
      outcome = { error: (error as Error).message };
    }
    outcomes.push({ outcome, listenersBefore, listenersAfter: count(req) });
    for (const wake of waiters.splice(0)) wake();
    if ('error' in outcome) return;
    res.writeHead(outcome.body === null ? 413 : 200, { connection: 'close' });
    res.end(outcome.body ?? 'too large');
  });
  await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const next = async () => {
    const deadline = Date.now() + 5_000;
    while (outcomes.length === 0) {
      if (Date.now() > deadline) throw new Error('the server read no body within 5 s');
      await new Promise<void>((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
    return outcomes.shift() as (typeof outcomes)[number];
  };
  return { port, next };
}

/** Sends `chunks` (chunked unless a length is given), then reads the whole answer. */
function send(port: number, chunks: string[], headers: Record<string, string> = {}) {
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/', headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    for (const chunk of chunks) req.write(chunk);
    req.end();
  });
}

describe('readNodeBody', () => {
  it('reads a chunked body whole, and leaves no listener of its own on the request', async () => {
    const { port, next } = await bodyServer();
    const answer = await send(port, ['{"query":', '"{ viewer { id } }"', '}']);
    expect(answer).toEqual({ status: 200, body: '{"query":"{ viewer { id } }"}' });
    const read = await next();
    expect(read.outcome).toEqual({ body: '{"query":"{ viewer { id } }"}' });
    // An SSE request lives as long as its stream: whatever reading it added would be kept that long.
    expect(read.listenersAfter).toEqual(read.listenersBefore);
  });

  it('is null at once for a Content-Length over the cap, and the refusal reaches the client', async () => {
    const { port, next } = await bodyServer();
    const body = 'x'.repeat(CAP + 1);
    const answer = await send(port, [body], { 'content-length': String(body.length) });
    expect(answer.status).toBe(413);
    expect((await next()).outcome).toEqual({ body: null });
  });

  it('is null once a chunked body passes the cap, holding no more, and the refusal reaches the client', async () => {
    const { port, next } = await bodyServer();
    const answer = await send(
      port,
      Array.from({ length: 20 }, () => 'y'.repeat(CAP / 4)),
    );
    expect(answer).toEqual({ status: 413, body: 'too large' });
    const read = await next();
    expect(read.outcome).toEqual({ body: null });
    expect(read.listenersAfter).toEqual(read.listenersBefore);
  });

  it('fails, instead of waiting for good, when the client leaves in the middle of the body', async () => {
    const { port, next } = await bodyServer();
    const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/' });
    req.on('error', () => {});
    req.write('{"query":');
    await new Promise((resolve) => setTimeout(resolve, 50));
    req.destroy();
    const read = await next();
    expect(read.outcome).toEqual({ error: expect.stringMatching(/closed|aborted/i) });
  });
});
