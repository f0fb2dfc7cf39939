import type { AvatarTaskRow } from '../db/schema.js';

/**
 * Expected failures of the task domain. The GraphQL layer exposes each as an error member with a stable
 * `code`; nothing here knows about GraphQL.
 */

/**
 * Every code an error member of a mutation carries. The GraphQL enum AvatarTaskErrorCode is built from this
 * list, so the TypeScript type and the schema cannot drift apart.
 */
export const taskErrorCodes = [
  'INVALID_INPUT',
  'IDEMPOTENCY_KEY_REUSED',
  'INSUFFICIENT_CREDITS',
  'UPSTREAM_REJECTED',
  'RATE_LIMITED',
  'QUOTA_EXCEEDED',
  'UPSTREAM_UNAVAILABLE',
  'NOT_FOUND',
  'ALREADY_SUBMITTED',
] as const;
export type TaskErrorCode = (typeof taskErrorCodes)[number];

/**
 * Every code a FAILED task carries in its failure: the submit refusals it shares with the error members, and
 * the ends only a stored task can reach. The GraphQL enum AvatarTaskFailureCode is built from this list.
 */
export const taskFailureCodes = [
  'INSUFFICIENT_CREDITS',
  'UPSTREAM_REJECTED',
  'UPSTREAM_UNAVAILABLE',
  'GENERATION_FAILED',
  'TIMEOUT',
  'SUBMIT_UNCONFIRMED',
  'CANCELED',
] as const;
export type TaskFailureCode = (typeof taskFailureCodes)[number];

export abstract class TaskError extends Error {
  abstract readonly code: TaskErrorCode;
}

export class InvalidInputError extends TaskError {
  override name = 'InvalidInputError';
  readonly code = 'INVALID_INPUT';
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

export class IdempotencyKeyReusedError extends TaskError {
  override name = 'IdempotencyKeyReusedError';
  readonly code = 'IDEMPOTENCY_KEY_REUSED';
  constructor() {
    super('This idempotencyKey was already used with a different input');
  }
}

export class InsufficientCreditsError extends TaskError {
  override name = 'InsufficientCreditsError';
  readonly code = 'INSUFFICIENT_CREDITS';
}

export class UpstreamRejectedError extends TaskError {
  override name = 'UpstreamRejectedError';
  readonly code = 'UPSTREAM_REJECTED';
}

export class RateLimitedError extends TaskError {
  override name = 'RateLimitedError';
  readonly code = 'RATE_LIMITED';
  constructor(readonly retryAfterSeconds: number) {
    super(`Too many tasks submitted; retry in ${retryAfterSeconds} s`);
  }
}

export type QuotaName = 'ACTIVE_TASKS' | 'CREATES_PER_HOUR';

/** For a full cap on unfinished tasks, when to look again: it frees when one of them ends, not at a set time. */
export const ACTIVE_TASKS_RETRY_SECONDS = 30;

export class QuotaExceededError extends TaskError {
  override name = 'QuotaExceededError';
  readonly code = 'QUOTA_EXCEEDED';
  readonly retryAfterSeconds: number;
  constructor(
    readonly quota: QuotaName,
    readonly limit: number,
    /** When the hourly cap frees a create; unknown for unfinished tasks. */
    readonly resetsAt: Date | undefined,
    now: Date = new Date(),
  ) {
    super(
      quota === 'ACTIVE_TASKS'
        ? `You have ${limit} unfinished tasks, the most allowed at once; create more when one ends`
        : `You have created ${limit} tasks in the last hour, the most allowed; more can be created at ${resetsAt?.toISOString()}`,
    );
    this.retryAfterSeconds = resetsAt
      ? Math.max(1, Math.ceil((resetsAt.getTime() - now.getTime()) / 1000))
      : ACTIVE_TASKS_RETRY_SECONDS;
  }
}

export class UpstreamUnavailableError extends TaskError {
  override name = 'UpstreamUnavailableError';
  readonly code = 'UPSTREAM_UNAVAILABLE';
}

/** A callback names a kie task that is not the one this task was submitted as. */
export class UpstreamTaskMismatchError extends Error {
  override name = 'UpstreamTaskMismatchError';
}

/** Missing, or not the viewer's: the two are deliberately indistinguishable. */
export class TaskNotFoundError extends TaskError {
  override name = 'TaskNotFoundError';
  readonly code = 'NOT_FOUND';
  constructor() {
    super('No such avatar task');
  }
}

/**
 * A cancel came too late: kie has the task, or may have it (its create is in flight or its answer was lost).
 * kie has no cancel, so the render and its billing go on; `task` is the task as it is now.
 */
export class AlreadySubmittedError extends TaskError {
  override name = 'AlreadySubmittedError';
  readonly code = 'ALREADY_SUBMITTED';
  constructor(
    readonly task: AvatarTaskRow,
    message: string,
  ) {
    super(message);
  }
}
