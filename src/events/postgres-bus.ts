import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type postgres from 'postgres';
import type { ListenerClient } from '../db/connection.js';
import { raceDeadline } from '../db/query-deadline.js';
import { type EventBus, parseSignal, type TaskSignal } from './bus.js';

export const TASK_CHANNEL = 'avatar_task_updated';
/**
 * Each instance beats on a channel of its own, on the same LISTEN connection: the task channel carries task
 * signals only (other instances and outside listeners read every payload there), and no instance hears another's beats.
 */
const heartbeatChannel = (instance: string) => `avatar_gateway_beat_${instance.replaceAll('-', '')}`;
/** How soon a listener that could not listen tries again, so it is back within a moment of the database. */
const RELISTEN_RETRY_MS = 200;

export interface PostgresEventBusOptions {
  /**
   * A fresh client for LISTEN, which calls `onLost` when its connection closes; a recycled listener's client
   * is destroyed and replaced by a new one.
   */
  openListener: (onLost: () => void) => ListenerClient;
  /** The pool (with query deadlines): publishes go through it, the heartbeat too. */
  sql: postgres.Sql;
  logger: Logger;
  /** How often the listener must hear a notification sent to itself. */
  heartbeatMs: number;
}

/**
 * Postgres LISTEN/NOTIFY: one listening connection per instance. Every (re)connect after the first means
 * notifications may have been missed, so subscribers re-read.
 *
 * A LISTEN connection that died silently (a black-holed flow: no error, no FIN) would otherwise go unnoticed
 * for good: it is idle, so nothing times out on it. So every `heartbeatMs` the bus notifies its own channel with
 * a beat only it knows; a beat not heard by the next one means the listener is deaf, and it is recycled: its
 * client destroyed, a new one listening, and every live stream told to resync. A listener whose connection
 * closed is recycled at once, and retried every RELISTEN_RETRY_MS until it listens again: postgres.js's own
 * re-listen gives up silently when the database is down at that moment.
 */
export class PostgresEventBus implements EventBus {
  private readonly signalListeners: Array<(signal: TaskSignal) => void> = [];
  private readonly resyncListeners: Array<() => void> = [];
  private readonly beatChannel = heartbeatChannel(randomUUID());
  private listener: ListenerClient | undefined;
  private listens = 0;
  private beats = 0;
  /** The beat sent and not yet heard, and when its NOTIFY committed. */
  private pendingBeat: string | undefined;
  private pendingSince = 0;
  private lastHeardAt = Date.now();
  private heartbeat: NodeJS.Timeout | undefined;
  private beating = false;
  private recovering: Promise<void> | undefined;
  private closed = false;

  private constructor(private readonly options: PostgresEventBusOptions) {}

  static async start(options: PostgresEventBusOptions): Promise<PostgresEventBus> {
    const bus = new PostgresEventBus(options);
    await bus.listen();
    bus.heartbeat = setInterval(() => void bus.beat(), options.heartbeatMs);
    bus.heartbeat.unref();
    return bus;
  }

  /** Whether the listener hears: no beat overdue, and one heard lately (within three beats and a bit). */
  healthy(): boolean {
    const now = Date.now();
    const overdue = this.pendingBeat !== undefined && now - this.pendingSince >= this.options.heartbeatMs;
    return (
      this.listener !== undefined &&
      this.recovering === undefined &&
      !overdue &&
      now - this.lastHeardAt < this.options.heartbeatMs * 3.5
    );
  }

  private async listen(): Promise<void> {
    const listener = this.options.openListener(() => {
      if (this.listener === listener) this.relisten('event bus listener lost its connection');
    });
    this.listener = listener;
    try {
      await raceDeadline(
        Promise.all([
          listener.sql.listen(
            TASK_CHANNEL,
            (payload) => this.received(payload),
            () => this.subscribed(),
          ),
          listener.sql.listen(this.beatChannel, (payload) => this.heard(payload)),
        ]),
        this.options.heartbeatMs,
      );
      this.lastHeardAt = Date.now();
    } catch (error) {
      this.listener = undefined;
      await listener.destroy();
      throw error;
    }
  }

  private heard(beat: string): void {
    if (beat !== this.pendingBeat) return;
    this.pendingBeat = undefined;
    this.lastHeardAt = Date.now();
  }

  private received(payload: string): void {
    const signal = parseSignal(payload);
    if (signal) for (const listener of this.signalListeners) listener(signal);
  }

  private subscribed(): void {
    this.listens += 1;
    if (this.listens === 1) return;
    this.logger.warn('event bus listener reconnected; live subscriptions re-read their tasks');
    for (const listener of this.resyncListeners) listener();
  }

  private get logger() {
    return this.options.logger;
  }

  private async beat(): Promise<void> {
    if (this.beating || this.closed || this.recovering) return;
    if (this.pendingBeat !== undefined) {
      // A beat gets a whole interval from its commit: a busy event loop or a slow NOTIFY is not deafness.
      if (Date.now() - this.pendingSince >= this.options.heartbeatMs) {
        this.relisten('event bus listener stopped hearing its heartbeat');
      }
      return;
    }
    this.beating = true;
    const beat = String(++this.beats);
    // Pending before it is sent: the listener may hear it before the NOTIFY's own answer arrives.
    this.pendingBeat = beat;
    this.pendingSince = Number.POSITIVE_INFINITY;
    try {
      await this.options.sql`select pg_notify(${this.beatChannel}, ${beat})`;
      if (this.pendingBeat === beat) this.pendingSince = Date.now();
    } catch {
      // The database is unreachable: no verdict on the listener. /readyz reports the database itself.
      if (this.pendingBeat === beat) this.pendingBeat = undefined;
    } finally {
      this.beating = false;
    }
  }

  /** Replaces the listener with a new one, retrying until one listens (or the bus closes). */
  private relisten(reason: string): void {
    if (this.recovering || this.closed) return;
    this.logger.warn(`${reason}; recycling it`);
    this.recovering = (async () => {
      while (!this.closed) {
        this.pendingBeat = undefined;
        const old = this.listener;
        this.listener = undefined;
        await old?.destroy();
        try {
          await this.listen();
          return;
        } catch (error) {
          this.logger.debug({ err: error }, 'event bus listener could not listen yet; retrying');
          await new Promise((resolve) => setTimeout(resolve, RELISTEN_RETRY_MS));
        }
      }
    })().finally(() => {
      this.recovering = undefined;
    });
  }

  async publish(signal: TaskSignal): Promise<void> {
    await this.options.sql`select pg_notify(${TASK_CHANNEL}, ${JSON.stringify(signal)})`;
  }

  onSignal(listener: (signal: TaskSignal) => void): void {
    this.signalListeners.push(listener);
  }

  onResync(listener: () => void): void {
    this.resyncListeners.push(listener);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.heartbeat);
    await this.recovering;
    const listener = this.listener;
    this.listener = undefined;
    await listener?.destroy();
  }
}
