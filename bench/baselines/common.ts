import { createHash, createHmac, createSecretKey, type KeyObject, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { jwtVerify } from 'jose';
import type postgres from 'postgres';
import { reportReady } from '../lib/child.js';

/**
 * What every hand-written baseline needs and a real service without GraphQL would also do: read a body, check
 * the bearer token, compare secrets in constant time, check kie's webhook signature, encode ids and cursors.
 */

export async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

export class Auth {
  /**
   * A key object made once, as jose advises for repeated checks: given the secret's bytes, jose imports them
   * into WebCrypto on every check: 620 ms of the raw ws server's 2,572 ms of CPU in a reconnect storm.
   */
  private readonly key: KeyObject;

  constructor(secret: string) {
    this.key = createSecretKey(Buffer.from(secret, 'utf8'));
  }

  /** The user id of a valid `Bearer <jwt>`, or undefined. */
  async userOf(header: string | undefined): Promise<string | undefined> {
    const token = /^Bearer\s+(\S+)$/i.exec(header ?? '')?.[1];
    if (!token) return undefined;
    try {
      const { payload } = await jwtVerify(token, this.key, { algorithms: ['HS256'] });
      return payload.sub;
    } catch {
      return undefined;
    }
  }
}

export function sameSecret(given: string, expected: string): boolean {
  const digest = (value: string) => createHash('sha256').update(value).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

/** kie's webhook HMAC over `taskId.timestamp`, with the same ±300 s window as the gateway. */
export function validSignature(
  headers: IncomingMessage['headers'],
  upstreamTaskId: string,
  key: string | undefined,
): boolean {
  if (!key) return true;
  const timestamp = String(headers['x-webhook-timestamp'] ?? '');
  const signature = String(headers['x-webhook-signature'] ?? '');
  if (!/^\d+$/.test(timestamp) || Math.abs(Date.now() / 1000 - Number(timestamp)) > 300) return false;
  const expected = createHmac('sha256', key).update(`${upstreamTaskId}.${timestamp}`).digest('base64');
  return sameSecret(signature, expected);
}

export const encodeGlobalId = (id: string) => Buffer.from(`AvatarTask:${id}`).toString('base64');

export function decodeGlobalId(globalId: string): string | undefined {
  const [typename, id] = Buffer.from(globalId, 'base64').toString('utf8').split(':');
  return typename === 'AvatarTask' && id ? id : undefined;
}

export const encodeCursor = (createdAt: Date, id: string) =>
  Buffer.from(`${createdAt.toISOString()}|${id}`, 'utf8').toString('base64url');

export function decodeCursor(cursor: string): { createdAt: Date; id: string } | undefined {
  const [createdAt, id] = Buffer.from(cursor, 'base64url').toString('utf8').split('|');
  const date = new Date(createdAt ?? '');
  return id && !Number.isNaN(date.getTime()) ? { createdAt: date, id } : undefined;
}

/**
 * listen()'s backlog, the gateway's default (HTTP_LISTEN_BACKLOG): so that in a reconnect storm neither side
 * makes its clients wait for TCP to retry a connection its accept queue had no room for.
 */
export const LISTEN_BACKLOG = 4_096;

/** Listens on a free loopback port and tells the parent, which may later stop the server and its pool. */
export async function serveBaseline(server: Server, sql: postgres.Sql): Promise<void> {
  await new Promise<void>((resolve) =>
    server.listen({ port: 0, host: '127.0.0.1', backlog: LISTEN_BACKLOG }, resolve),
  );
  const { port } = server.address() as AddressInfo;
  reportReady(`http://127.0.0.1:${port}`, {
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await sql.end({ timeout: 5 });
    },
  });
}
