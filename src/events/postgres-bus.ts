import type { Logger } from 'pino';
import type postgres from 'postgres';
import { type EventBus, parseSignal, type TaskSignal } from './bus.js';

export const TASK_CHANNEL = 'avatar_task_updated';

/**
 * Postgres LISTEN/NOTIFY: one listening connection per instance (postgres.js keeps it and reconnects it).
 * Every (re)connect after the first means notifications may have been missed, so subscribers re-read.
 */
export class PostgresEventBus implements EventBus {
  private readonly signalListeners: Array<(signal: TaskSignal) => void> = [];
  private readonly resyncListeners: Array<() => void> = [];
  private listening: { unlisten(): Promise<void> } | undefined;
  private connects = 0;

  private constructor(
    private readonly sql: postgres.Sql,
    private readonly logger: Logger,
  ) {}

  static async start(sql: postgres.Sql, logger: Logger): Promise<PostgresEventBus> {
    const bus = new PostgresEventBus(sql, logger);
    bus.listening = await sql.listen(
      TASK_CHANNEL,
      (payload) => {
        const signal = parseSignal(payload);
        if (signal) for (const listener of bus.signalListeners) listener(signal);
      },
      () => bus.connected(),
    );
    return bus;
  }

  private connected(): void {
    this.connects += 1;
    if (this.connects === 1) return;
    this.logger.warn('event bus listener reconnected; live subscriptions re-read their tasks');
    for (const listener of this.resyncListeners) listener();
  }

  async publish(signal: TaskSignal): Promise<void> {
    await this.sql`select pg_notify(${TASK_CHANNEL}, ${JSON.stringify(signal)})`;
  }

  onSignal(listener: (signal: TaskSignal) => void): void {
    this.signalListeners.push(listener);
  }

  onResync(listener: () => void): void {
    this.resyncListeners.push(listener);
  }

  async close(): Promise<void> {
    await this.listening?.unlisten().catch(() => {});
  }
}
