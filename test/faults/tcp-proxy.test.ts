import net from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';

/** The proxy the fault tests rely on, checked against a plain echo server. */
describe('tcp proxy', () => {
  let echo: net.Server;
  let proxy: TcpProxy;

  beforeEach(async () => {
    echo = net.createServer((socket) => {
      socket.on('error', () => {});
      socket.pipe(socket);
    });
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
    proxy = await startTcpProxy({ host: '127.0.0.1', port: (echo.address() as net.AddressInfo).port });
  });
  afterEach(async () => {
    await proxy.close();
    await new Promise((resolve) => echo.close(resolve));
  });

  interface Client {
    socket: net.Socket;
    received: () => string;
    events: string[];
  }
  const connect = () =>
    new Promise<Client>((resolve, reject) => {
      let text = '';
      const events: string[] = [];
      const socket = net.connect(proxy.port, '127.0.0.1', () =>
        resolve({ socket, received: () => text, events }),
      );
      socket.on('data', (chunk) => {
        text += chunk.toString();
      });
      socket.on('end', () => events.push('end'));
      socket.on('error', (error: NodeJS.ErrnoException) => {
        events.push(error.code ?? 'error');
        reject(error);
      });
    });
  const until = async (check: () => boolean, timeoutMs = 2000) => {
    const deadline = Date.now() + timeoutMs;
    while (!check()) {
      if (Date.now() > deadline) throw new Error('condition not met in time');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  };
  const quiet = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  it('passes bytes both ways', async () => {
    const client = await connect();
    client.socket.write('hello');
    await until(() => client.received() === 'hello');
    client.socket.destroy();
  });

  it('pause holds bytes on open sockets and delivers them on pass', async () => {
    const client = await connect();
    proxy.pause();
    client.socket.write('held');
    await quiet(200);
    expect(client.received()).toBe('');
    expect(client.events).toEqual([]);
    proxy.pass();
    await until(() => client.received() === 'held');
    client.socket.destroy();
  });

  it('black-hole silences existing flows without a FIN or RST, while new connections work', async () => {
    const old = await connect();
    proxy.blackHole();
    old.socket.write('lost');
    await quiet(300);
    expect(old.received()).toBe('');
    expect(old.events).toEqual([]);
    expect(old.socket.destroyed).toBe(false);

    const fresh = await connect();
    fresh.socket.write('new');
    await until(() => fresh.received() === 'new');
    fresh.socket.destroy();
    old.socket.destroy();
  });

  it('black-hole can refuse new connections as well', async () => {
    proxy.blackHole({ newConnections: 'refuse' });
    const socket = net.connect(proxy.port, '127.0.0.1');
    const code = await new Promise<string>((resolve) =>
      socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? '')),
    );
    expect(code).toBe('ECONNRESET');
  });

  it('reset destroys every flow with an RST', async () => {
    const client = await connect();
    const failed = new Promise<string>((resolve) =>
      client.socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? '')),
    );
    client.socket.on('error', () => {});
    proxy.reset();
    expect(await failed).toBe('ECONNRESET');
  });

  it('latency delays every chunk by the set time, in order', async () => {
    proxy.setLatency(150);
    const client = await connect();
    const started = Date.now();
    client.socket.write('a');
    client.socket.write('b');
    await until(() => client.received() === 'ab');
    // Both directions are delayed: at least two delays for the round trip.
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    client.socket.destroy();
  });
});
