import {
  IdempotencyKeyReusedError,
  InsufficientCreditsError,
  InvalidInputError,
  RateLimitedError,
  type TaskError,
  UpstreamRejectedError,
  UpstreamUnavailableError,
} from '../../tasks/errors.js';
import { builder } from '../builder.js';

/** The shared shape of every expected failure: clients can always select `... on Error { code message }`. */
export const ErrorInterface = builder.interfaceRef<TaskError>('Error').implement({
  description: 'An expected failure, with a stable machine-readable code and a message for people.',
  fields: (t) => ({
    code: t.exposeString('code', { description: 'Stable code, e.g. INVALID_INPUT or RATE_LIMITED.' }),
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
    "The gateway's limit on tasks sent to kie.ai is reached (code RATE_LIMITED). Nothing was stored.",
  interfaces: [ErrorInterface],
  isTypeOf: (value) => value instanceof RateLimitedError,
  fields: (t) => ({
    retryAfterSeconds: t.exposeInt('retryAfterSeconds', { description: 'Seconds to wait before retrying.' }),
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

export const createAvatarTaskErrors = [
  InvalidInputError,
  IdempotencyKeyReusedError,
  InsufficientCreditsError,
  UpstreamRejectedError,
  RateLimitedError,
  UpstreamUnavailableError,
];
