import type { AddressInfo } from 'node:net';
import { createServer, type Server, type Socket } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createWatchedSocketFactory } from '../../src/db/socket-watchdog.js';

/**
 * A real TCP server stands in for Postgres. postgres.js strips every listener from a socket it has upgraded to
 * TLS or seen close; destroying such a socket with an error must not surface as an unhandled 'error' event,
 * which would end the gateway's process.
 */
describe('the watched socket factory', () => {
  let server: Server;
  let port: number;
  const accepted: Socket[] = [];

  beforeEach(async () => {
    server = createServer((socket) => {
      accepted.push(socket);
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterEach(async () => {
    for (const socket of accepted.splice(0)) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  });

  it('destroys a socket nobody listens to any more without an unhandled error', async () => {
    const unhandled: unknown[] = [];
    const onUncaught = (error: unknown) => unhandled.push(error);
    process.on('uncaughtException', onUncaught);
    try {
      const watchdog = createWatchedSocketFactory({ answerTimeoutMs: 1_000, keepAliveMs: 1_000 });
      const socket = watchdog.factory({ host: ['127.0.0.1'], port: [port] });
      await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
      // What postgres.js does before it hands the connection to TLS.
      socket.removeAllListeners();
      const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
      watchdog.destroyAll('the database is being replaced');
      await closed;
      await new Promise((resolve) => setImmediate(resolve));
      expect(socket.destroyed).toBe(true);
      expect(unhandled).toEqual([]);
    } finally {
      process.off('uncaughtException', onUncaught);
    }
  });
});
