/**
 * A TCP proxy in front of Postgres that counts the queries passing through it: every simple Query ('Q') and
 * every extended-protocol Execute ('E') a client sends, which is what Postgres runs, whatever driver, ORM or
 * statement cache sits above it. A server under test gets this proxy's address as its DATABASE_URL, so its
 * queries are counted from outside, the same way for the gateway and for a baseline.
 *
 * Its own process (forked with IPC by bench/lib/processes.ts, on either core, so neither busy side starves it): `stats` answers
 * `{ queries, connections }` so far. BENCH_ENV holds UPSTREAM, the Postgres `host:port` to forward to.
 */
import { createConnection, createServer, type Socket } from 'node:net';
import { benchEnv, reportFailure, reportReady } from '../lib/child.js';

/** The startup-phase requests that carry a protocol code instead of a type byte (SSL, GSSAPI encryption). */
const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CONNECT_TIMEOUT_MS = 5_000;

let queries = 0;
let connections = 0;
const open = new Set<Socket>();

/**
 * Reads the client's side of one connection as Postgres messages. Before the startup message, messages have no
 * type byte (length, then a code); after it, every message is a type byte, a length, and a body.
 */
class FrontendCounter {
  private buffer: Buffer = Buffer.alloc(0);
  private started = false;

  feed(chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    for (;;) {
      if (!this.started) {
        if (this.buffer.length < 8) return;
        const length = this.buffer.readInt32BE(0);
        if (this.buffer.length < length) return;
        const code = this.buffer.readInt32BE(4);
        if (code !== SSL_REQUEST && code !== GSSENC_REQUEST) this.started = true;
        this.buffer = this.buffer.subarray(length);
        continue;
      }
      if (this.buffer.length < 5) return;
      const length = this.buffer.readInt32BE(1);
      if (this.buffer.length < 1 + length) return;
      const type = this.buffer[0];
      if (type === 0x51 /* Q */ || type === 0x45 /* E */) queries++;
      this.buffer = this.buffer.subarray(1 + length);
    }
  }
}

try {
  const env = benchEnv();
  const [host = '127.0.0.1', port = '5432'] = (env.UPSTREAM ?? '').split(':');
  const server = createServer((client: Socket) => {
    connections++;
    open.add(client);
    const counter = new FrontendCounter();
    const upstream = createConnection({ host, port: Number(port) });
    upstream.setTimeout(CONNECT_TIMEOUT_MS, () => upstream.destroy(new Error('Postgres did not answer')));
    upstream.once('connect', () => upstream.setTimeout(0));
    client.on('data', (chunk: Buffer) => counter.feed(chunk));
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      open.delete(client);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const listenPort = typeof address === 'object' && address ? address.port : 0;
  reportReady(`postgres://127.0.0.1:${listenPort}`, {
    stats: () => ({ queries, connections }),
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of open) socket.destroy();
      await closed;
    },
  });
} catch (error) {
  reportFailure(error);
}
