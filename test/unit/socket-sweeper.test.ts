import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { SocketSweeper } from '../../src/http/socket-sweeper.js';

/** A real ws server and real clients: the sweeper's pings, pongs and closes go over TCP. */
describe('SocketSweeper', () => {
  const KEEP_ALIVE_MS = 100;
  let wss: WebSocketServer;
  let sweeper: SocketSweeper;
  let url: string;
  const clients: WebSocket[] = [];

  beforeEach(async () => {
    wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise((resolve) => wss.once('listening', resolve));
    url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`;
    sweeper = new SocketSweeper({ keepAliveMs: KEEP_ALIVE_MS, deadlineCheckMs: 20 });
    wss.on('connection', (socket) => sweeper.track(socket));
  });
  afterEach(async () => {
    sweeper.stop();
    for (const client of clients.splice(0)) client.terminate();
    await new Promise((resolve) => wss.close(resolve));
  });

  /** Connects and resolves once the server has seen the socket too. */
  async function connect(options: WebSocket.ClientOptions = {}) {
    const accepted = new Promise<WebSocket>((resolve) => wss.once('connection', resolve));
    const client = new WebSocket(url, options);
    clients.push(client);
    const closed = new Promise<{ code: number; reason: string; atMs: number }>((resolve) =>
      client.on('close', (code, reason) =>
        resolve({ code, reason: String(reason), atMs: performance.now() }),
      ),
    );
    await new Promise((resolve) => client.once('open', resolve));
    return { client, server: await accepted, closed };
  }

  const stillOpen = (client: WebSocket) => client.readyState === WebSocket.OPEN;
  const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  it('drops a client that stops answering pings, and keeps one that answers', async () => {
    const silent = await connect({ autoPong: false });
    const answering = await connect();
    const { code } = await silent.closed;
    // Terminated, not closed: a dead peer would never finish a closing handshake.
    expect(code).toBe(1006);
    await pause(KEEP_ALIVE_MS * 3);
    expect(stillOpen(answering.client)).toBe(true);
  });

  it('closes a socket with the code and reason of its deadline, once it has passed', async () => {
    const { server, closed } = await connect();
    const start = performance.now();
    sweeper.closeAt(server, Date.now() + 150, 4403, 'Token expired');
    const result = await closed;
    expect(result).toMatchObject({ code: 4403, reason: 'Token expired' });
    expect(result.atMs - start).toBeGreaterThanOrEqual(140);
  });

  it('keeps a socket whose message arrived before its deadline, though the server was too busy to read it', async () => {
    const accepted = new Promise<WebSocket>((resolve) => wss.once('connection', resolve));
    const client = new WebSocket(url);
    clients.push(client);
    const server = await accepted;
    await new Promise((resolve) => client.once('open', resolve));
    // As graphql-ws's connection_init cancels the 4408 deadline.
    server.once('message', () => sweeper.cancelDeadline(server));
    sweeper.closeAt(server, Date.now() + 30, 4408, 'Connection initialisation timeout');
    client.send('connection_init');
    // The process busy with other sockets' work past the deadline and the next check: the message waits.
    const busyUntil = Date.now() + 100;
    while (Date.now() < busyUntil) {}
    await pause(100);
    expect(stillOpen(client)).toBe(true);
  });

  it('lets a later deadline replace an earlier one, and a cancelled one close nothing', async () => {
    const replaced = await connect();
    const cancelled = await connect();
    sweeper.closeAt(replaced.server, Date.now() + 50, 4408, 'Connection initialisation timeout');
    sweeper.closeAt(replaced.server, Date.now() + 250, 4403, 'Token expired');
    sweeper.closeAt(cancelled.server, Date.now() + 50, 4408, 'Connection initialisation timeout');
    sweeper.cancelDeadline(cancelled.server);
    await pause(150);
    expect(stillOpen(replaced.client)).toBe(true);
    expect(await replaced.closed).toMatchObject({ code: 4403, reason: 'Token expired' });
    expect(stillOpen(cancelled.client)).toBe(true);
  });
});
