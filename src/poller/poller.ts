import type { Logger } from 'pino';
import type { AvatarTaskRow } from '../db/schema.js';
import { failureCodes } from '../tasks/errors.js';
import type { TaskRepository } from '../tasks/repository.js';
import type { TaskService } from '../tasks/service.js';
import { nextPollDelayMs } from '../tasks/states.js';
import { KieError } from '../upstream/errors.js';
import type { KieClient } from '../upstream/kie-client.js';
import type { SlidingWindowLimiter } from '../upstream/rate-limiter.js';

export interface PollerOptions {
  service: TaskService;
  repository: TaskRepository;
  kie: KieClient;
  createLimiter: SlidingWindowLimiter;
  logger: Logger;
  intervalMs: number;
  minDelayMs: number;
  maxDelayMs: number;
  taskTimeoutMs: number;
  /** How long a submit with an unknown outcome waits for kie's callback before it ends FAILED. */
  submitGraceMs: number;
  maxQueriesPerSecond: number;
  /** How long a claimed task stays this instance's; longer than a batch's worst wait on the query limiter. */
  leaseMs: number;
}

/**
 * The fallback for callbacks that are late, duplicated or never come, and the loop that finishes the
 * gateway's own unfinished business: tasks still to submit, submits whose outcome is unknown, timeouts.
 * Every unfinished task carries `next_check_at`; one indexed query finds the due ones.
 */
export class Poller {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = true;

  constructor(private readonly options: PollerOptions) {}

  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.tick()
        .then(() => {})
        .catch((error) => this.options.logger.error({ err: error }, 'poller tick failed'))
        .finally(() => this.schedule(this.options.intervalMs));
    }, delayMs);
    this.timer.unref();
  }

  /** One pass: lease what is due (at most what kie's query limit allows per interval) and work it. */
  async tick(): Promise<number> {
    const { repository, intervalMs, maxQueriesPerSecond, leaseMs } = this.options;
    const batch = Math.max(1, Math.ceil((maxQueriesPerSecond * intervalMs) / 1000));
    const due = await repository.claimDue(batch, leaseMs);
    await Promise.all(due.map((task) => this.work(task)));
    return due.length;
  }

  private async work(task: AvatarTaskRow): Promise<void> {
    const { service, repository, logger } = this.options;
    const now = Date.now();
    try {
      if (now - task.createdAt.getTime() >= this.options.taskTimeoutMs) {
        const minutes = Math.round(this.options.taskTimeoutMs / 60_000);
        await service.fail(task.id, 'TIMEOUT', {
          code: failureCodes.timeout,
          message: `kie did not finish the task within ${minutes} minutes`,
        });
        return;
      }
      if (task.state === 'PENDING') {
        await this.workUnsubmitted(task, now);
        return;
      }
      const snapshot = await this.options.kie.recordInfo(task.upstreamTaskId ?? '');
      await service.applyUpstream(task.id, snapshot, 'POLLER', this.nextPoll(task, Date.now()));
    } catch (error) {
      logger.warn({ err: error, taskId: task.id }, 'checking a task failed; will retry');
      const retryInMs =
        error instanceof KieError && error.kind === 'rejected' ? this.options.maxDelayMs : 5_000;
      await repository
        .patch(task.id, { leaseUntil: null, nextCheckAt: this.capped(task, now + retryInMs) })
        .catch(() => {});
    }
  }

  private async workUnsubmitted(task: AvatarTaskRow, now: number): Promise<void> {
    const { service, repository } = this.options;
    switch (task.submitStatus) {
      case 'queued': {
        const waitMs = this.options.createLimiter.tryTake();
        if (waitMs > 0) {
          await repository.patch(task.id, { leaseUntil: null, nextCheckAt: new Date(now + waitMs) });
          return;
        }
        await service.submit(task.id, 'POLLER');
        return;
      }
      case 'in_flight':
        // The instance that sent it died before it heard back: kie may have the task, so never resend.
        await repository.patch(task.id, {
          submitStatus: 'unknown',
          leaseUntil: null,
          nextCheckAt: new Date(now + this.options.submitGraceMs),
        });
        return;
      case 'unknown':
        await service.fail(task.id, 'POLLER', {
          code: failureCodes.submitUnconfirmed,
          message:
            'kie never confirmed the submission and no callback claimed it; it was not resent to avoid paying twice',
        });
        return;
      default:
        // accepted/refused tasks are never PENDING; release the lease so nothing stays stuck.
        await repository.patch(task.id, { leaseUntil: null, nextCheckAt: null });
    }
  }

  private nextPoll(task: AvatarTaskRow, now: number) {
    const age = now - (task.submittedAt ?? task.createdAt).getTime();
    const delay = nextPollDelayMs(age, this.options);
    return {
      pollAttempts: task.pollAttempts + 1,
      leaseUntil: null,
      nextCheckAt: this.capped(task, now + delay),
    };
  }

  /** Never later than the task's timeout, so timeouts are found by the same due query. */
  private capped(task: AvatarTaskRow, at: number): Date {
    return new Date(Math.min(at, task.createdAt.getTime() + this.options.taskTimeoutMs));
  }
}
