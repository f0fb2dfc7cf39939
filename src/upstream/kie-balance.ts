import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { DeadlineExceededError, withDeadline } from '../deadline.js';
import type { Metrics } from '../metrics.js';
import type { KieClient } from './kie-client.js';

export interface KieBalanceReading {
  credits: number;
  /** When kie answered. */
  checkedAt: Date;
}

export interface KieBalanceOptions {
  kie: Pick<KieClient, 'credits'>;
  /** How long a reading is served before kie is asked again; also how often it is read in the background. */
  ttlMs: number;
  /** The longest a reading may take, the wait for kie's query limit included. */
  timeoutMs: number;
  lowCreditsThreshold: number;
  logger: Logger;
  metrics: Metrics;
}

/**
 * kie's credit balance, read at most once per `ttlMs` however many ask (lru-cache's fetchMethod shares one
 * read among concurrent callers), kept on a gauge, and warned about once each time it falls below the
 * threshold. Read in the background too, so the gauge and the warning do not wait for someone to look.
 */
export class KieBalance {
  private readonly cache: LRUCache<'balance', KieBalanceReading>;
  private low = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly options: KieBalanceOptions) {
    this.cache = new LRUCache<'balance', KieBalanceReading>({
      max: 1,
      ttl: options.ttlMs,
      fetchMethod: () => this.read(),
    });
  }

  /** The balance, at most `ttlMs` old. */
  async current(): Promise<KieBalanceReading> {
    const reading = await this.cache.fetch('balance');
    if (!reading) throw new Error('kie gave no credit balance');
    return reading;
  }

  start(): void {
    const refresh = () =>
      this.current().catch((error) =>
        this.options.logger.warn({ err: error }, 'reading the kie credit balance failed'),
      );
    void refresh();
    this.timer = setInterval(refresh, this.options.ttlMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private async read(): Promise<KieBalanceReading> {
    const { kie, timeoutMs, lowCreditsThreshold, logger, metrics } = this.options;
    const credits = await withDeadline(
      kie.credits(),
      timeoutMs,
      () => new DeadlineExceededError(`kie's credit balance took longer than ${timeoutMs} ms`),
    );
    if (!Number.isFinite(credits)) throw new Error('kie answered a credit balance that is not a number');
    metrics.kieCreditBalance.set(credits);
    const low = credits < lowCreditsThreshold;
    if (low && !this.low) {
      logger.warn(
        { credits, threshold: lowCreditsThreshold },
        `kie credit balance is low: ${credits} credits, below KIE_LOW_CREDITS_THRESHOLD (${lowCreditsThreshold})`,
      );
    }
    this.low = low;
    return { credits, checkedAt: new Date() };
  }
}
