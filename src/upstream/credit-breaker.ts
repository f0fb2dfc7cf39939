import { BrokenCircuitError, CircuitState, ConsecutiveBreaker, circuitBreaker, handleWhen } from 'cockatiel';
import type { Logger } from 'pino';
import { KieError } from './errors.js';

/**
 * After kie refuses a create with 402 (the account is out of credits), creates are not sent for a cool-down:
 * every one would be refused alike, and each refusal costs a round trip and a slot in kie's create window.
 * The first create after the cool-down is the probe; while it runs, others are refused too. When kie takes it
 * (or answers anything but 402), creates flow again; another 402 starts a new cool-down. Per instance: each
 * instance learns of an empty account from its own first 402.
 *
 * cockatiel's breaker does the state keeping; it only says whether a create may go once the create is made,
 * and a create refused up front must not be stored at all, so `refusing` reads the cool-down it started.
 */
export class CreditBreaker {
  private readonly policy;
  private openedAt: number | undefined;

  constructor(
    private readonly cooldownMs: number,
    logger: Logger,
    onChange: (paused: boolean) => void = () => {},
  ) {
    this.policy = circuitBreaker(
      handleWhen((error) => error instanceof KieError && error.kind === 'insufficient_credits'),
      { halfOpenAfter: cooldownMs, breaker: new ConsecutiveBreaker(1) },
    );
    this.policy.onBreak(() => {
      this.openedAt = Date.now();
      onChange(true);
      logger.warn(
        { cooldownMs },
        'kie is out of credits (402): creates are refused without calling kie until the cool-down has passed and a create goes through',
      );
    });
    this.policy.onReset(() => {
      this.openedAt = undefined;
      onChange(false);
      logger.info('kie took a create again: creates are sent as usual');
    });
  }

  /** Whether a create now would be refused without calling kie: within the cool-down, or while the probe runs. */
  get refusing(): boolean {
    const state = this.policy.state;
    if (state === CircuitState.HalfOpen) return true;
    return state === CircuitState.Open && Date.now() - (this.openedAt ?? 0) < this.cooldownMs;
  }

  /** The message of a create refused up front. */
  get refusal(): string {
    const seconds = Math.max(1, Math.ceil((this.cooldownMs - (Date.now() - (this.openedAt ?? 0))) / 1000));
    return `kie.ai is out of credits (it refused a create with 402); creates are not sent for another ${seconds} s or until one goes through`;
  }

  /** Sends a create unless the breaker is open; refused, it fails as kie's 402 would, without a call to kie. */
  async send<T>(create: () => Promise<T>): Promise<T> {
    try {
      return await this.policy.execute(create);
    } catch (error) {
      if (error instanceof BrokenCircuitError) throw new KieError('insufficient_credits', 402, this.refusal);
      throw error;
    }
  }
}
