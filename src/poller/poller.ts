import type { Logger } from 'pino';
import type { AvatarTaskRow } from '../db/schema.js';
import { DeadlineExceededError, withDeadline } from '../deadline.js';
import { whileLeased } from '../tasks/lease.js';
import type { TaskRepository } from '../tasks/repository.js';
import type { TaskService } from '../tasks/service.js';
import { type AvatarTaskEventSource, nextPollDelayMs } from '../tasks/states.js';
import { inSpan, TASK_ID } from '../telemetry/tracing.js';
import { KieError } from '../upstream/errors.js';
import type { KieClient } from '../upstream/kie-client.js';

export interface PollerOptions {
  service: TaskService;
  repository: TaskRepository;
  kie: KieClient;
  logger: Logger;
  intervalMs: number;
  minDelayMs: number;
  maxDelayMs: number;
  taskTimeoutMs: number;
  /** How long a submit with an unknown outcome waits for kie's callback before it ends FAILED. */
  submitGraceMs: number;
  maxQueriesPerSecond: number;
  /** How long a claimed task stays this instance's without renewal; renewed while it is worked. */
  leaseMs: number;
  /** A tick that takes longer is abandoned and the next one scheduled. */
  tickTimeoutMs: number;
  /** A task's work that takes longer is given up (its lease expires, so it is worked again later). */
  workTimeoutMs: number;
  /** How often a task is checked while a live subscriber watches it (WATCHED_POLL_INTERVAL_MS). */
  watchedPollIntervalMs: number;
}

/** Whether a live subscriber (on any instance) is looking at the task. */
const isWatched = (task: AvatarTaskRow, now: number) => (task.watchedUntil?.getTime() ?? 0) > now;

const HEALTH_WINDOW = 50;
const DURATION_WINDOW = 200;
const MIN_SAMPLES = 10;
/** Callbacks are relied on while at most one result in ten was found by a poll before its callback came. */
const RELIABLE_SHARE = 0.9;
const QUIET_QUANTILE = 0.95;
/** A task is overdue once it has run this much longer than 95% of recent tasks. */
const QUIET_MARGIN = 1.5;

/**
 * Whether kie's callbacks arrive, from the last results this instance applied: a callback that brought a task
 * to its end counts for, a poll that found the task already finished counts against. While they arrive, a
 * task younger than most recent tasks took (1.5 times their 95th percentile) is not queried: its callback is
 * the likelier news, and querying it is what made the poller cost several queries per task. The margin also
 * covers a young gateway, whose first durations are those of the tasks that finished first, the short ones.
 * A poll still comes on the usual schedule once a task is overdue, so a lost callback is found, counts
 * against, and after a few of those every task is queried on the usual schedule again (within 25% of its
 * age). With no history yet, the usual schedule applies.
 */
export class CallbackHealth {
  private readonly outcomes: boolean[] = [];
  private readonly durations: number[] = [];

  record(task: AvatarTaskRow, source: AvatarTaskEventSource): void {
    if (source !== 'CALLBACK' && source !== 'POLLER') return;
    this.outcomes.push(source === 'CALLBACK');
    if (this.outcomes.length > HEALTH_WINDOW) this.outcomes.shift();
    if (source === 'CALLBACK' && task.submittedAt && task.completedAt) {
      this.durations.push(task.completedAt.getTime() - task.submittedAt.getTime());
      if (this.durations.length > DURATION_WINDOW) this.durations.shift();
    }
  }

  /** Age (since submission) under which a task is left to its callback; 0 while callbacks are not reliable. */
  quietPeriodMs(): number {
    if (this.outcomes.length < MIN_SAMPLES || this.durations.length < MIN_SAMPLES) return 0;
    const callbacks = this.outcomes.filter(Boolean).length;
    if (callbacks / this.outcomes.length < RELIABLE_SHARE) return 0;
    const sorted = [...this.durations].sort((a, b) => a - b);
    const quantile = sorted[Math.min(sorted.length - 1, Math.ceil(QUIET_QUANTILE * sorted.length) - 1)] ?? 0;
    return quantile * QUIET_MARGIN;
  }
}

/**
 * The fallback for callbacks that are late, duplicated or never come, and the loop that finishes the
 * gateway's own unfinished business: tasks still to submit, submits whose outcome is unknown, timeouts.
 * Every unfinished task carries `next_check_at`; one indexed query finds the due ones.
 */
export class Poller {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  /** Tasks being worked: a slow kie answer holds up only its own task, not the next tick. */
  private readonly inFlight = new Set<Promise<void>>();
  /** Creates taken from the fair queue and being sent; they spend create slots, not the query budget. */
  private readonly submitting = new Set<Promise<void>>();
  /** Ids of the tasks being worked, whose leases are released if a stop cannot wait for them. */
  private readonly leased = new Set<string>();
  private stopped = true;
  readonly callbackHealth = new CallbackHealth();
  /** How late a check lands after it was due (the tick, kie's answer, the write), smoothed. */
  private checkLagMs = 0;
  /** When the last tick finished without error: /readyz reports a poller that stopped ticking. */
  private lastTickOkAt = Date.now();

  constructor(private readonly options: PollerOptions) {
    options.service.onSettled((task, source) => {
      // A watched task is polled early on purpose: finding its result first says nothing about callbacks.
      if (source === 'POLLER' && isWatched(task, Date.now())) return;
      this.callbackHealth.record(task, source);
    });
  }

  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
    await this.settled();
  }

  /** Whether ticks are completing: the last good one is no older than a few intervals and a tick's deadline. */
  healthy(): boolean {
    const { intervalMs, tickTimeoutMs } = this.options;
    return this.stopped || Date.now() - this.lastTickOkAt < 3 * intervalMs + tickTimeoutMs;
  }

  /**
   * Every tick has a deadline: one await that never returns (a dead database connection) used to stop the
   * poller for good, as the next tick was scheduled only after it.
   */
  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      const { tickTimeoutMs, logger } = this.options;
      this.running = withDeadline(
        this.tick(),
        tickTimeoutMs,
        () => new DeadlineExceededError(`poller tick took longer than ${tickTimeoutMs} ms; abandoned`),
      )
        .then(() => {
          this.lastTickOkAt = Date.now();
        })
        .catch((error) => logger.error({ err: error }, 'poller tick failed'))
        .finally(() => this.schedule(this.options.intervalMs));
    }, delayMs);
    this.timer.unref();
  }

  /**
   * One pass: lease what is due (at most what kie's query limit allows per interval, less what is still being
   * worked) and start working it. The next pass does not wait for this one's slowest task: a kie answer that
   * takes its whole timeout used to hold up every other poll, submit and timeout. `settled()` waits for it.
   */
  async tick(): Promise<number> {
    const { repository, intervalMs, maxQueriesPerSecond, leaseMs } = this.options;
    const batch = Math.max(1, Math.ceil((maxQueriesPerSecond * intervalMs) / 1000));
    // Queued submits go to kie in fair turns as kie's window frees, whichever instance finds the slot.
    const sends = await this.options.service.submitQueued('POLLER').catch((error) => {
      this.options.logger.error({ err: error }, 'taking queued submits failed');
      return [];
    });
    for (const send of sends) {
      const work: Promise<void> = send
        .then(() => {})
        .catch((error) => this.options.logger.error({ err: error }, 'submitting a queued task failed'))
        .finally(() => this.submitting.delete(work));
      this.submitting.add(work);
    }
    const room = batch - this.inFlight.size;
    if (room <= 0) return 0;
    const due = await repository.claimDue(room, leaseMs, new Date(), this.options.taskTimeoutMs);
    for (const task of due) {
      this.leased.add(task.id);
      const work: Promise<void> = whileLeased(repository, task.id, leaseMs, this.options.logger, () =>
        this.workWithDeadline(task),
      ).finally(() => {
        this.inFlight.delete(work);
        this.leased.delete(task.id);
      });
      this.inFlight.add(work);
    }
    return due.length;
  }

  /** Gives up the leases of tasks still being worked (a stop that could not wait), for another instance. */
  async releaseLeases(): Promise<void> {
    await this.options.repository.releaseLeases([...this.leased]);
  }

  /** Resolves when every task leased so far has been worked. */
  async settled(): Promise<void> {
    await Promise.all([...this.inFlight, ...this.submitting]);
  }

  /** A task whose work outruns its deadline frees its slot; its lease runs out and it is worked again. */
  private async workWithDeadline(task: AvatarTaskRow): Promise<void> {
    const { workTimeoutMs, logger } = this.options;
    try {
      await withDeadline(
        inSpan('poller.check', { attributes: { [TASK_ID]: task.id, 'avatar.task.state': task.state } }, () =>
          this.work(task),
        ),
        workTimeoutMs,
        () => new DeadlineExceededError(`working the task took longer than ${workTimeoutMs} ms; given up`),
      );
    } catch (error) {
      logger.warn({ err: error, taskId: task.id }, 'checking a task was abandoned; will retry');
    }
  }

  private async work(task: AvatarTaskRow): Promise<void> {
    const { service, repository, logger } = this.options;
    const now = Date.now();
    try {
      if (now - task.createdAt.getTime() >= this.options.taskTimeoutMs) {
        const minutes = Math.round(this.options.taskTimeoutMs / 60_000);
        await service.fail(task.id, 'TIMEOUT', {
          code: 'TIMEOUT',
          message: `kie did not finish the task within ${minutes} minutes`,
        });
        return;
      }
      if (task.state === 'PENDING') {
        await this.workUnsubmitted(task, now);
        return;
      }
      const age = now - (task.submittedAt ?? task.createdAt).getTime();
      const watched = isWatched(task, now);
      if (!watched && task.upstreamTaskId && age < this.callbackHealth.quietPeriodMs()) {
        // Checked again on the usual schedule, so a change in the callbacks' health applies at once.
        const { nextCheckAt } = this.nextPoll(task, now);
        await repository.patch(task.id, { leaseUntil: null, nextCheckAt });
        return;
      }
      const snapshot = await this.options.kie.recordInfo(task.upstreamTaskId ?? '');
      const next = this.nextPoll(task, Date.now());
      if (watched) next.nextCheckAt = this.soonerWhileWatched(task, now, next.nextCheckAt);
      await service.applyUpstream(task.id, snapshot, 'POLLER', next);
      const lag = Date.now() - (task.nextCheckAt?.getTime() ?? now);
      this.checkLagMs = 0.9 * this.checkLagMs + 0.1 * Math.max(0, lag);
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
      case 'queued':
        // The fair queue sends it (submitQueued); a lease taken here must not hold it back.
        await repository.patch(task.id, { leaseUntil: null });
        return;
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
          code: 'SUBMIT_UNCONFIRMED',
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
    // A check lands after it was due: up to a tick later, plus kie's answer and the write. Asking that much
    // earlier keeps the result within 25% of the task's age.
    const allowance = Math.max(this.options.intervalMs, this.checkLagMs);
    const delay = Math.max(0, nextPollDelayMs(age, this.options) - allowance);
    return {
      pollAttempts: task.pollAttempts + 1,
      leaseUntil: null,
      nextCheckAt: this.capped(task, now + delay),
    };
  }

  /**
   * While someone watches, the task is checked at least every WATCHED_POLL_INTERVAL_MS from when it was
   * claimed, so each of kie's states is seen; the first check after the watch lapses puts it back on the
   * usual schedule.
   */
  private soonerWhileWatched(task: AvatarTaskRow, claimedAt: number, usual: Date): Date {
    const watchedAt = this.capped(task, claimedAt + this.options.watchedPollIntervalMs);
    return watchedAt < usual ? watchedAt : usual;
  }

  /** Never later than the task's timeout, so timeouts are found by the same due query. */
  private capped(task: AvatarTaskRow, at: number): Date {
    return new Date(Math.min(at, task.createdAt.getTime() + this.options.taskTimeoutMs));
  }
}
