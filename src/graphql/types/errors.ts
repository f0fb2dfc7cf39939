import {
  IdempotencyKeyReusedError,
  InsufficientCreditsError,
  InvalidInputError,
  QuotaExceededError,
  RateLimitedError,
  type TaskError,
  type TaskErrorCode,
  TaskNotFoundError,
  UpstreamRejectedError,
  UpstreamUnavailableError,
} from '../../tasks/errors.js';
import { builder } from '../builder.js';

// An enum rather than a String, so generated clients get a union of literals they can switch over; the
// values serialize as the same strings, so a client reading `code` as a string keeps working.
const AvatarTaskErrorCodeEnum = builder.enumType('AvatarTaskErrorCode', {
  description: 'The stable code of an error member; each one names the error type that carries it.',
  values: {
    INVALID_INPUT: { description: 'InvalidInputError: an input field is not acceptable; see field.' },
    IDEMPOTENCY_KEY_REUSED: {
      description: 'IdempotencyKeyReusedError: the idempotencyKey was already used with a different input.',
    },
    INSUFFICIENT_CREDITS: {
      description: 'InsufficientCreditsError: the kie.ai account has too few credits.',
    },
    UPSTREAM_REJECTED: {
      description: 'UpstreamRejectedError: kie.ai refused the task in a way a retry cannot fix.',
    },
    RATE_LIMITED: {
      description: 'RateLimitedError: the gateway is too busy; back off for retryAfterSeconds.',
    },
    QUOTA_EXCEEDED: { description: 'QuotaExceededError: one of your per-user caps is full; see quota.' },
    UPSTREAM_UNAVAILABLE: {
      description: 'UpstreamUnavailableError: kie.ai is down and the task could not be queued for later.',
    },
    NOT_FOUND: {
      description: 'NotFoundError: no such task, or not yours; the two are answered alike.',
    },
    ALREADY_SUBMITTED: {
      description:
        'AlreadySubmittedError: kie.ai has the task (or may have it) and has no cancel; its render and billing go on.',
    },
  } satisfies Record<TaskErrorCode, unknown>,
});

/** The shared shape of every expected failure: clients can always select `... on Error { code message }`. */
export const ErrorInterface = builder.interfaceRef<TaskError>('Error').implement({
  description: 'An expected failure, with a stable machine-readable code and a message for people.',
  fields: (t) => ({
    code: t.expose('code', {
      type: AvatarTaskErrorCodeEnum,
      description: 'Stable code, one per error type, e.g. INVALID_INPUT or RATE_LIMITED.',
    }),
    message: t.exposeString('message', { description: 'What went wrong, for a person to read.' }),
  }),
});

builder.objectType(InvalidInputError, {
  name: 'InvalidInputError',
  description: 'An input field is not acceptable (code INVALID_INPUT). Nothing was stored or sent.',
  interfaces: [ErrorInterface],
  isTypeOf: (value) => value instanceof InvalidInputError,
  fields: (t) => ({
    field: t.exposeString('field', { description: 'The input field at fault, e.g. imageUrl.' }),
  }),
});

builder.objectType(RateLimitedError, {
  name: 'RateLimitedError',
  description:
    'The gateway is too busy to take this task now (code RATE_LIMITED): back off for retryAfterSeconds. Nothing was stored.',
  interfaces: [ErrorInterface],
  isTypeOf: (value) => value instanceof RateLimitedError,
  fields: (t) => ({
    retryAfterSeconds: t.exposeInt('retryAfterSeconds', { description: 'Seconds to wait before retrying.' }),
  }),
});

const QuotaEnum = builder.enumType('AvatarTaskQuota', {
  description: 'A per-user cap on tasks.',
  values: {
    ACTIVE_TASKS: { description: 'Unfinished tasks at once (MAX_ACTIVE_TASKS_PER_USER).' },
    CREATES_PER_HOUR: { description: 'Tasks created in any hour (MAX_CREATES_PER_USER_PER_HOUR).' },
  } as const,
});

builder.objectType(QuotaExceededError, {
  name: 'QuotaExceededError',
  description: 'One of your caps is full (code QUOTA_EXCEEDED). Nothing was stored or sent.',
  interfaces: [ErrorInterface],
  isTypeOf: (value) => value instanceof QuotaExceededError,
  fields: (t) => ({
    quota: t.expose('quota', { type: QuotaEnum, description: 'Which cap is full.' }),
    limit: t.exposeInt('limit', { description: 'The cap.' }),
    retryAfterSeconds: t.exposeInt('retryAfterSeconds', {
      description:
        'Seconds until the hourly cap frees a create; for unfinished tasks, a suggested wait (the cap frees when one of them ends).',
    }),
    resetsAt: t.expose('resetsAt', {
      type: 'DateTime',
      nullable: true,
      description: 'When the hourly cap frees a create; null for the cap on unfinished tasks.',
    }),
  }),
});

/** An error type with nothing beyond `code` and `message`. */
function plainErrorType(errorClass: new (message: string) => TaskError, name: string, description: string) {
  builder.objectType(errorClass, {
    name,
    description,
    interfaces: [ErrorInterface],
    isTypeOf: (value) => value instanceof errorClass,
  });
}

plainErrorType(
  IdempotencyKeyReusedError,
  'IdempotencyKeyReusedError',
  'The idempotencyKey was already used by you with a different input (code IDEMPOTENCY_KEY_REUSED).',
);
plainErrorType(
  InsufficientCreditsError,
  'InsufficientCreditsError',
  'The kie.ai account has too few credits (code INSUFFICIENT_CREDITS).',
);
plainErrorType(
  UpstreamRejectedError,
  'UpstreamRejectedError',
  'kie.ai refused the task in a way a retry cannot fix (code UPSTREAM_REJECTED).',
);
plainErrorType(
  UpstreamUnavailableError,
  'UpstreamUnavailableError',
  'kie.ai is down and the task could not be queued for later (code UPSTREAM_UNAVAILABLE).',
);

plainErrorType(
  TaskNotFoundError,
  'NotFoundError',
  'No such task: it does not exist or is not yours, which are answered alike (code NOT_FOUND).',
);

export const createAvatarTaskErrors = [
  InvalidInputError,
  IdempotencyKeyReusedError,
  InsufficientCreditsError,
  UpstreamRejectedError,
  RateLimitedError,
  QuotaExceededError,
  UpstreamUnavailableError,
];
