import net from 'node:net';

/**
 * A TCP proxy on 127.0.0.1 that a fault test puts in front of Postgres or the kie simulator, to make the network
 * fail the ways a real one does: stall, go silent without a reset, reset, or slow down.
 *
 * - `pass()`: forward everything (the start); flows paused before resume, and what they held is delivered.
 * - `pause()`: stop forwarding on every flow, old and new; sockets stay open (a partition that heals).
 * - `blackHole()`: every existing flow goes silent for good: never read, written, ended or destroyed again, so
 *   neither end sees an error or a FIN. New connections pass (or, with `newConnections`, are paused or refused).
 *   With `where`, only the flows whose first bytes from the client match (e.g. the one that sent LISTEN).
 * - `refuse()`: new connections are reset at once; existing flows are left as they are.
 * - `reset()`: every existing flow is destroyed with an RST on both sides.
 * - `setLatency(ms)`: every chunk is delivered `ms` later, in order.
 */
export interface TcpProxy {
  readonly port: number;
  /** `target` (a URL of the proxied service) with its host and port replaced by the proxy's. */
  url(target: string): string;
  pass(): void;
  pause(): void;
  blackHole(options?: {
    newConnections?: 'pass' | 'pause' | 'refuse';
    where?: (flow: { sent: string }) => boolean;
  }): number;
  refuse(): void;
  reset(): void;
  setLatency(ms: number): void;
  /** Flows that are open at both ends and not black-holed. */
  liveFlows(): number;
  /** Every connection accepted since the start, including closed ones. */
  acceptedConnections(): number;
  close(): Promise<void>;
}

type FlowState = 'live' | 'paused' | 'dead';
type NewConnections = 'pass' | 'pause' | 'refuse';

interface Flow {
  client: net.Socket;
  upstream: net.Socket;
  state: FlowState;
  /** A side that closed while the flow was paused: its peer is closed when the flow resumes. */
  closedWhilePaused: boolean;
  /** The first bytes the client sent, as latin1 text, for `blackHole({ where })`. */
  sent: string;
}

const SENT_PREVIEW_BYTES = 8192;

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const flows = new Set<Flow>();
  let newConnections: NewConnections = 'pass';
  let latencyMs = 0;
  let accepted = 0;
  // Each socket's delivery queue toward its peer, drained again when a paused flow resumes.
  const drainers = new WeakMap<net.Socket, () => void>();

  const server = net.createServer((client) => {
    accepted += 1;
    if (newConnections === 'refuse') {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(target.port, target.host);
    const flow: Flow = { client, upstream, state: 'live', closedWhilePaused: false, sent: '' };
    client.on('data', (chunk: Buffer) => {
      if (flow.sent.length < SENT_PREVIEW_BYTES) flow.sent += chunk.toString('latin1');
    });
    flows.add(flow);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    forward(flow, client, upstream);
    forward(flow, upstream, client);
    if (newConnections === 'pause') setState(flow, 'paused');
  });

  /** One direction of a flow, through an ordered delay queue that only drains while the flow is live. */
  function forward(flow: Flow, from: net.Socket, to: net.Socket) {
    const queue: Array<{ at: number; chunk: Buffer }> = [];
    let timer: NodeJS.Timeout | undefined;
    const drain = () => {
      timer = undefined;
      if (flow.state !== 'live') return;
      const now = Date.now();
      while (queue.length > 0 && (queue[0]?.at ?? 0) <= now) {
        const item = queue.shift();
        if (item && !to.destroyed) to.write(item.chunk);
      }
      if (queue.length > 0) timer = setTimeout(drain, (queue[0]?.at ?? now) - now);
    };
    from.on('data', (chunk: Buffer) => {
      queue.push({ at: Date.now() + latencyMs, chunk });
      if (!timer) timer = setTimeout(drain, latencyMs);
    });
    drainers.set(from, drain);
    const onGone = () => {
      if (flow.state === 'dead') return;
      if (flow.state === 'paused') {
        flow.closedWhilePaused = true;
        return;
      }
      closeFlow(flow);
    };
    from.on('end', onGone);
    from.on('close', onGone);
    // A dead flow's sockets still get errors (e.g. the other end finally gave up): they must not crash the test.
    from.on('error', () => onGone());
  }
  function closeFlow(flow: Flow) {
    flows.delete(flow);
    flow.client.destroy();
    flow.upstream.destroy();
  }

  function setState(flow: Flow, state: FlowState) {
    flow.state = state;
    if (state === 'live') {
      if (flow.closedWhilePaused) {
        closeFlow(flow);
        return;
      }
      flow.client.resume();
      flow.upstream.resume();
      drainers.get(flow.client)?.();
      drainers.get(flow.upstream)?.();
    } else {
      flow.client.pause();
      flow.upstream.pause();
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;

  return {
    port,
    url(targetUrl) {
      const rewritten = new URL(targetUrl);
      rewritten.hostname = '127.0.0.1';
      rewritten.port = String(port);
      return rewritten.toString();
    },
    pass() {
      newConnections = 'pass';
      for (const flow of flows) if (flow.state === 'paused') setState(flow, 'live');
    },
    pause() {
      newConnections = 'pause';
      for (const flow of flows) if (flow.state === 'live') setState(flow, 'paused');
    },
    blackHole(options = {}) {
      let silenced = 0;
      for (const flow of flows) {
        if (options.where && !options.where({ sent: flow.sent })) continue;
        setState(flow, 'dead');
        silenced += 1;
      }
      newConnections = options.newConnections ?? (options.where ? newConnections : 'pass');
      return silenced;
    },
    refuse() {
      newConnections = 'refuse';
    },
    reset() {
      for (const flow of flows) {
        flows.delete(flow);
        flow.client.resetAndDestroy();
        flow.upstream.resetAndDestroy();
      }
    },
    setLatency(ms) {
      latencyMs = ms;
    },
    liveFlows: () => [...flows].filter((flow) => flow.state === 'live').length,
    acceptedConnections: () => accepted,
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const flow of flows) {
        flow.client.destroy();
        flow.upstream.destroy();
      }
      flows.clear();
      await closed;
    },
  };
}
