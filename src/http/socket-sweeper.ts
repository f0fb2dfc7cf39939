import type { WebSocket } from 'ws';

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

/** The heartbeat visits the sockets in this many slices per period, so pings never leave in one burst. */
const HEARTBEAT_SLICES = 24;

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
  private readonly timers: NodeJS.Timeout[];
  /**
   * Sockets in HEARTBEAT_SLICES groups, one visited per tick. Fixed groups rather than an iterator kept
   * across ticks: a Set iterator pins the Set's old table, and with it every socket closed meanwhile.
   */
  private readonly slices = Array.from({ length: HEARTBEAT_SLICES }, () => new Set<WebSocket>());
  private nextSlice = 0;
  private tick = 0;
  // Shared listeners, called with the socket as `this`: nothing allocated per socket.
  private readonly onPong: (this: WebSocket) => void;
  private readonly onClose: (this: WebSocket) => void;

  constructor(options: SocketSweeperOptions) {
    const { unanswered, deadlines, slices } = this;
    this.onPong = function (this: WebSocket) {
      unanswered.delete(this);
    };
    this.onClose = function (this: WebSocket) {
      unanswered.delete(this);
      deadlines.delete(this);
      for (const slice of slices) if (slice.delete(this)) break;
    };
    this.timers = [
      setInterval(() => this.heartbeat(), Math.max(1, Math.floor(options.keepAliveMs / HEARTBEAT_SLICES))),
      setInterval(() => this.closeOverdue(), options.deadlineCheckMs ?? 1_000),
    ];
    for (const timer of this.timers) timer.unref();
  }

  /** Starts looking after a newly connected socket. */
  track(socket: WebSocket): void {
    this.slices[this.nextSlice]?.add(socket);
    this.nextSlice = (this.nextSlice + 1) % HEARTBEAT_SLICES;
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
    for (const slice of this.slices) slice.clear();
  }

  /**
   * One slice of a round over all sockets. Pinging 10,000 sockets at once stalls the event loop for tens of
   * milliseconds, which every live update would wait behind (the fan-out bench showed it as p99 spikes); a
   * slice at a time spreads them over the period, as per-socket timers did.
   */
  private heartbeat(): void {
    const slice = this.slices[this.tick];
    this.tick = (this.tick + 1) % HEARTBEAT_SLICES;
    for (const socket of slice ?? []) this.visit(socket);
  }

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
    for (const [socket, deadline] of this.deadlines) {
      if (deadline.atMs > now) continue;
      this.deadlines.delete(socket);
      socket.close(deadline.code, deadline.reason);
    }
  }
}
