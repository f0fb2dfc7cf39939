import { connect, type Socket } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { type GatewayProcess, startGatewayProcess } from '../helpers/gateway-process.js';

/**
 * Every client of an instance comes back within a second of its restart. Until the gateway accepts them, the
 * kernel queues connections up to listen()'s backlog and drops the SYNs of the rest, and each of those clients
 * waits for TCP to send it again, 1 s later and then 3 s. With node's default backlog (511), the bench's
 * 10,000-client reconnect storm overflowed the queue about 14,000 times; HTTP_LISTEN_BACKLOG (4,096) left a
 * few hundred. Here the gateway's event loop is held with SIGSTOP, as a busy instance holds it, while a burst
 * of clients connects.
 */

interface Burst {
  sockets: Socket[];
  /** How many completed their TCP handshake while the gateway was stopped. */
  connected: number;
}

async function connectBurst(url: string, count: number, settleMs: number): Promise<Burst> {
  const port = Number(new URL(url).port);
  let connected = 0;
  const sockets = Array.from({ length: count }, () => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => connected++);
    socket.on('error', () => {});
    return socket;
  });
  // Long enough for every handshake the kernel queues, short of TCP's first retry of a dropped SYN (1 s).
  await new Promise((resolve) => setTimeout(resolve, settleMs));
  return { sockets, connected };
}

/** Each socket asks for /healthz once the gateway runs again; resolves with the status lines. */
function askHealth(sockets: Socket[], deadlineMs: number): Promise<string[]> {
  return Promise.all(
    sockets.map(
      (socket) =>
        new Promise<string>((resolve) => {
          let answer = '';
          const timer = setTimeout(() => resolve(answer.split('\r\n')[0] || 'no answer'), deadlineMs);
          socket.on('data', (chunk) => {
            answer += chunk.toString('latin1');
          });
          socket.on('close', () => {
            clearTimeout(timer);
            resolve(answer.split('\r\n')[0] || 'closed without an answer');
          });
          socket.write('GET /healthz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n');
        }),
    ),
  );
}

describe('a burst of connections while the gateway is busy', () => {
  let kie: SimulatorServer;
  let gateway: GatewayProcess | undefined;
  let burst: Burst | undefined;

  beforeAll(async () => {
    kie = await startSimulatorServer({});
  });
  afterEach(() => {
    for (const socket of burst?.sockets ?? []) socket.destroy();
    burst = undefined;
    gateway?.child.kill('SIGCONT');
    gateway?.kill();
    gateway = undefined;
  });
  afterAll(async () => {
    await kie?.close();
  });

  it('is queued whole, 1,000 clients by default, and each is answered once the gateway runs again', async () => {
    gateway = await startGatewayProcess({ kieUrl: kie.url });
    gateway.child.kill('SIGSTOP');
    burst = await connectBurst(gateway.url, 1_000, 700);
    expect(burst.connected).toBe(1_000);
    gateway.child.kill('SIGCONT');
    const answers = await askHealth(burst.sockets, 20_000);
    expect(answers.filter((line) => /^HTTP\/1\.1 200\b/.test(line))).toHaveLength(1_000);
  }, 60_000);

  it('is queued up to HTTP_LISTEN_BACKLOG, and no further', async () => {
    gateway = await startGatewayProcess({ kieUrl: kie.url, env: { HTTP_LISTEN_BACKLOG: '16' } });
    gateway.child.kill('SIGSTOP');
    burst = await connectBurst(gateway.url, 200, 700);
    // Linux queues backlog + 1; a handshake or two may complete while the queue fills.
    expect(burst.connected).toBeGreaterThanOrEqual(16);
    expect(burst.connected).toBeLessThan(40);
  }, 60_000);
});
