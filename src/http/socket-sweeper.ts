import type { WebSocket, WebSocketServer } from 'ws';

export interface SocketSweeperOptions {
  /** Every socket is pinged this often; one that has not answered the previous ping is dropped. */
  keepAliveMs: number;
  /** How often deadlines are checked: a socket closes at most this long after its deadline. */
  deadlineCheckMs?: number;
}

interface Deadline {
  atMs: number;
  code: number;
  reason: string;
}

/**
 * The timed chores of every socket on a server, done by two shared timers instead of timers per socket: a
 * heartbeat (ws's documented pattern: ping all clients each period, terminate those that did not answer the
 * last ping) and deadlines (connection_init in time, token expiry). Per-socket timers, with the closures
 * they hold, were a measurable share of an idle subscription's memory (`npm run bench -- --only memory`).
 */
export class SocketSweeper {
  /** Pinged by the last sweep and not heard from since. */
  private readonly unanswered = new Set<WebSocket>();
  private readonly deadlines = new Map<WebSocket, Deadline>();
  private readonly timers: NodeJS.Timeout[];
  // Shared listeners, called with the socket as `this`: nothing allocated per socket.
  private readonly onPong: (this: WebSocket) => void;
  private readonly onClose: (this: WebSocket) => void;

  constructor(
    private readonly wss: WebSocketServer,
    options: SocketSweeperOptions,
  ) {
    const { unanswered, deadlines } = this;
    this.onPong = function (this: WebSocket) {
      unanswered.delete(this);
    };
    this.onClose = function (this: WebSocket) {
      unanswered.delete(this);
      deadlines.delete(this);
    };
    this.timers = [
      setInterval(() => this.heartbeat(), options.keepAliveMs),
      setInterval(() => this.closeOverdue(), options.deadlineCheckMs ?? 1_000),
    ];
    for (const timer of this.timers) timer.unref();
  }

  /** Starts looking after a newly connected socket. */
  track(socket: WebSocket): void {
    socket.on('pong', this.onPong);
    socket.on('close', this.onClose);
  }

  /** Closes the socket with `code` once `atMs` has passed, unless another deadline replaces this one. */
  closeAt(socket: WebSocket, atMs: number, code: number, reason: string): void {
    this.deadlines.set(socket, { atMs, code, reason });
  }

  cancelDeadline(socket: WebSocket): void {
    this.deadlines.delete(socket);
  }

  stop(): void {
    for (const timer of this.timers) clearInterval(timer);
    this.unanswered.clear();
    this.deadlines.clear();
  }

  private heartbeat(): void {
    for (const socket of this.wss.clients) {
      if (socket.readyState !== socket.OPEN) continue;
      if (this.unanswered.has(socket)) {
        this.unanswered.delete(socket);
        socket.terminate();
        continue;
      }
      this.unanswered.add(socket);
      socket.ping();
    }
  }

  private closeOverdue(): void {
    const now = Date.now();
    for (const [socket, deadline] of this.deadlines) {
      if (deadline.atMs > now) continue;
      this.deadlines.delete(socket);
      socket.close(deadline.code, deadline.reason);
    }
  }
}
