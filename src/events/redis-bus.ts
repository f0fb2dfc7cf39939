import { createRedisEventTarget } from '@graphql-yoga/redis-event-target';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { type EventBus, parseSignal, type TaskSignal } from './bus.js';
import { TASK_CHANNEL } from './postgres-bus.js';

/**
 * Redis pub/sub through yoga's redis event target, for deployments that outgrow one database's NOTIFY.
 * ioredis resubscribes by itself after a reconnect; messages published meanwhile are gone, so every
 * reconnect of the subscribing client asks subscribers to re-read.
 */
export class RedisEventBus implements EventBus {
  private readonly resyncListeners: Array<() => void> = [];
  private readonly target: ReturnType<typeof createRedisEventTarget<CustomEvent<string>>>;

  private constructor(
    private readonly publishClient: Redis,
    private readonly subscribeClient: Redis,
    logger: Logger,
  ) {
    // Signals are already JSON strings: pass them through unchanged.
    const serializer = {
      stringify: (message: unknown) => String(message),
      parse: (message: string) => message,
    };
    this.target = createRedisEventTarget<CustomEvent<string>>({ publishClient, subscribeClient, serializer });
    // start() has already connected it: that first 'ready' has passed, so the next one is a reconnect.
    let readies = subscribeClient.status === 'ready' ? 1 : 0;
    subscribeClient.on('ready', () => {
      readies += 1;
      if (readies === 1) return;
      logger.warn('redis event bus reconnected; live subscriptions re-read their tasks');
      for (const listener of this.resyncListeners) listener();
    });
  }

  static async start(url: string, logger: Logger): Promise<RedisEventBus> {
    const options = { lazyConnect: true, maxRetriesPerRequest: null };
    const publishClient = new Redis(url, options);
    const subscribeClient = new Redis(url, options);
    await Promise.all([publishClient.connect(), subscribeClient.connect()]);
    return new RedisEventBus(publishClient, subscribeClient, logger);
  }

  async publish(signal: TaskSignal): Promise<void> {
    this.target.dispatchEvent(new CustomEvent(TASK_CHANNEL, { detail: JSON.stringify(signal) }));
  }

  onSignal(listener: (signal: TaskSignal) => void): void {
    this.target.addEventListener(TASK_CHANNEL, (event) => {
      const signal = parseSignal(String((event as CustomEvent<string>).detail));
      if (signal) listener(signal);
    });
  }

  onResync(listener: () => void): void {
    this.resyncListeners.push(listener);
  }

  healthy(): boolean {
    return this.subscribeClient.status === 'ready';
  }

  async close(): Promise<void> {
    this.publishClient.disconnect();
    this.subscribeClient.disconnect();
  }
}
