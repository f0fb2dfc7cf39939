import type { WebSocket } from 'ws';
import { SlicedRounds } from './sliced-rounds.js';

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
 * heartbeat (ws's documented pattern: ping every client once per period, terminate those that did not answer
 * the previous ping) and deadlines (connection_init in time, token expiry). Per-socket timers, with the closures
 * they hold, were a measurable share of an idle subscription's memory (`npm run bench -- --only memory`).
 */
export class SocketSweeper {
  /** Pinged by the last sweep and not heard from since. */
  private readonly unanswered = new Set<WebSocket>();
  private readonly deadlines = new Map<WebSocket, Deadline>();
  /** The heartbeat: every socket visited once per period, a slice of them per tick. */
  private readonly heartbeat: SlicedRounds<WebSocket>;
  private readonly deadlineTimer: NodeJS.Timeout;
  // Shared listeners, called with the socket as `this`: nothing allocated per socket.
  private readonly onPong: (this: WebSocket) => void;
  private readonly onClose: (this: WebSocket) => void;

  constructor(options: SocketSweeperOptions) {
    const heartbeat = new SlicedRounds<WebSocket>(options.keepAliveMs, (socket) => this.visit(socket));
    const { unanswered, deadlines } = this;
    this.heartbeat = heartbeat;
    this.onPong = function (this: WebSocket) {
      unanswered.delete(this);
    };
    this.onClose = function (this: WebSocket) {
      unanswered.delete(this);
      deadlines.delete(this);
      heartbeat.delete(this);
    };
    this.deadlineTimer = setInterval(() => this.closeOverdue(), options.deadlineCheckMs ?? 1_000);
    this.deadlineTimer.unref();
  }

  /** Starts looking after a newly connected socket. */
  track(socket: WebSocket): void {
    this.heartbeat.add(socket);
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
    this.heartbeat.stop();
    clearInterval(this.deadlineTimer);
    this.unanswered.clear();
    this.deadlines.clear();
  }

  /** ws's heartbeat: terminate a socket that did not answer the previous ping, else ping it. */
  private visit(socket: WebSocket): void {
    if (socket.readyState !== socket.OPEN) return;
    if (this.unanswered.has(socket)) {
      this.unanswered.delete(socket);
      socket.terminate();
      return;
    }
    this.unanswered.add(socket);
    socket.ping();
  }

  private closeOverdue(): void {
    const now = Date.now();
    const overdue: Array<[WebSocket, Deadline]> = [];
    for (const entry of this.deadlines) if (entry[1].atMs <= now) overdue.push(entry);
    if (overdue.length === 0) return;
    // Closed once the event loop has read what waits on the sockets (immediates run after the poll phase,
    // timers before it): when thousands of clients connect at once, a connection_init that arrived in time
    // can sit unread behind other sockets' work, and its client must not be closed with 4408 for that, only
    // to retry into the same queue.
    setImmediate(() => {
      for (const [socket, deadline] of overdue) {
        if (this.deadlines.get(socket) !== deadline) continue;
        this.deadlines.delete(socket);
        socket.close(deadline.code, deadline.reason);
      }
    });
  }
}
