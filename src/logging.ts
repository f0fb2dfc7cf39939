import pino, { type Logger } from 'pino';
import { currentRequestId } from './telemetry/request-context.js';

/**
 * Logs never carry what a log reader must not see: query parameters (user ids, idempotency keys, inputs, the
 * per-task callback secret, all bound into the gateway's statements), tokens, callback secrets or signatures.
 * Errors are where they hide: drizzle puts every parameter of a failed query into its message
 * (`Failed query: ...\nparams: ...`), postgres.js and PGlite add `detail` ("Failing row contains (...)"), and
 * yoga logs the GraphQLError that wraps them. So errors are serialized from an allow-list of fields, with
 * the parameters cut out wherever they were copied, and every logged string is scrubbed of bearer tokens,
 * JWTs and callback-URL secrets.
 */

const REDACTED = '[redacted]';

/** Paths that name a secret wherever a caller might log one. */
const REDACTED_PATHS = [
  'authorization',
  '*.authorization',
  '*.headers.authorization',
  '*.headers["x-webhook-signature"]',
  'token',
  '*.token',
  'callbackSecret',
  '*.callbackSecret',
  'callBackUrl',
  '*.callBackUrl',
  'callbackUrl',
  '*.callbackUrl',
  'connectionParams',
  '*.connectionParams',
  'params',
  'parameters',
];

/** Database error fields that say what failed without saying with which values. */
const DATABASE_FIELDS = [
  'code',
  'severity',
  'constraint',
  'constraint_name',
  'table',
  'table_name',
  'column',
  'column_name',
  'routine',
];

const MAX_CAUSE_DEPTH = 5;

/** The gateway's logger: JSON on stdout at `level`. */
export function createLogger(level: string): Logger {
  return safeLogger(pino({ level, base: { service: 'avatar-gateway' } }));
}

/**
 * A child of `base` that serializes errors safely and scrubs secrets from what is logged. Applied to any
 * logger the gateway is given, so an embedder's or a test's own pino gets the same protection.
 */
export function safeLogger(base: Logger): Logger {
  return base.child(
    {},
    {
      serializers: { err: serializeError, error: serializeError },
      redact: { paths: REDACTED_PATHS, censor: REDACTED },
      formatters: { log: withRequestIdField },
    },
  );
}

/** A log line's fields, scrubbed, with the id of the request it was written for (request-context.ts). */
function withRequestIdField(object: object): Record<string, unknown> {
  const fields = scrubValue(object, 0) as Record<string, unknown>;
  const requestId = currentRequestId();
  return requestId === undefined ? fields : { requestId, ...fields };
}

export interface SerializedError {
  type: string;
  message: string;
  stack?: string;
  kind?: string;
  cause?: SerializedError;
  [field: string]: unknown;
}

/** An error as it may be logged: type, message, stack, the database's codes, and its causes, all scrubbed. */
export function serializeError(error: unknown): SerializedError | unknown {
  if (!(error instanceof Error)) return typeof error === 'string' ? scrubString(error, []) : error;
  const values = boundValues(error);
  return serializeChain(error, values, 0);
}

function serializeChain(error: Error, values: string[], depth: number): SerializedError {
  const type =
    error.constructor?.name && error.constructor.name !== 'Object' ? error.constructor.name : error.name;
  const message = scrubString(withoutParameters(error.message), values);
  const frames = (error.stack ?? '').split('\n').filter((line) => /^\s+at /.test(line));
  const serialized: SerializedError = {
    type,
    message,
    ...(frames.length > 0 ? { stack: [`${type}: ${message}`, ...frames].join('\n') } : {}),
  };
  const fields = error as unknown as Record<string, unknown>;
  for (const field of DATABASE_FIELDS) {
    const value = fields[field];
    if (typeof value === 'string' || typeof value === 'number') serialized[field] = value;
  }
  if (typeof fields.kind === 'string') serialized.kind = fields.kind;
  const cause = fields.originalError ?? fields.cause;
  if (cause instanceof Error && cause !== error && depth < MAX_CAUSE_DEPTH) {
    serialized.cause = serializeChain(cause, values, depth + 1);
  }
  return serialized;
}

/** Every string bound as a parameter anywhere in the error's chain: they are cut from whatever repeats them. */
function boundValues(error: Error): string[] {
  const values = new Set<string>();
  let current: unknown = error;
  for (let depth = 0; current instanceof Error && depth <= MAX_CAUSE_DEPTH; depth++) {
    const fields = current as unknown as Record<string, unknown>;
    for (const list of [fields.params, fields.parameters]) {
      if (!Array.isArray(list)) continue;
      for (const value of list) {
        const text = value instanceof Date ? value.toISOString() : String(value ?? '');
        // Short values (a state, a model, a number) are words of the message itself, and reveal nothing.
        if (text.length >= 6) values.add(text);
      }
    }
    current = fields.originalError ?? fields.cause;
  }
  // Longest first, so a value that contains another is cut whole.
  return [...values].sort((a, b) => b.length - a.length);
}

/** drizzle's message is `Failed query: <sql>\nparams: <every value>`; the values are last. */
function withoutParameters(message: string): string {
  const at = message.indexOf('\nparams:');
  return at < 0 ? message : `${message.slice(0, at)} (parameters not logged)`;
}

const SECRET_PATTERNS: Array<[RegExp, string]> = [
  [/(bearer\s+)[^\s"',]+/gi, `$1${REDACTED}`],
  // A JWT anywhere: three base64url parts, the first a JSON header.
  [/eyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]*/g, REDACTED],
  // The callback URL's last segment is the task's secret.
  [/(\/callbacks\/kie\/[^/\s"']+\/)[^\s"'?#]+/g, `$1${REDACTED}`],
];

export function scrubString(text: string, values: readonly string[] = []): string {
  let scrubbed = text;
  for (const value of values) scrubbed = scrubbed.split(value).join(REDACTED);
  for (const [pattern, replacement] of SECRET_PATTERNS) scrubbed = scrubbed.replace(pattern, replacement);
  return scrubbed;
}

function scrubValue(value: unknown, depth: number): unknown {
  if (typeof value === 'string') return scrubString(value);
  if (depth > 4 || value === null || typeof value !== 'object' || value instanceof Error) return value;
  if (Array.isArray(value)) return value.map((item) => scrubValue(item, depth + 1));
  if (Object.getPrototypeOf(value) !== Object.prototype) return value;
  const scrubbed: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) scrubbed[key] = scrubValue(item, depth + 1);
  return scrubbed;
}

type YogaLogLevel = 'debug' | 'info' | 'warn' | 'error';

/**
 * The logger yoga is given. yoga logs an error as `logger.error(error)`, and pino then takes the error's raw
 * message as the line's `msg`, past every serializer: here the error goes under `err` instead, where it is
 * serialized safely, and any text is scrubbed.
 */
export function yogaLogger(logger: Logger): Record<YogaLogLevel, (...args: unknown[]) => void> {
  const forward =
    (level: YogaLogLevel) =>
    (...args: unknown[]) => {
      const error = args.find((arg): arg is Error => arg instanceof Error);
      const text = args.filter((arg): arg is string => typeof arg === 'string').join(' ');
      if (error) logger[level]({ err: error }, text ? scrubString(text) : 'GraphQL operation failed');
      else logger[level](scrubString(text));
    };
  return { debug: forward('debug'), info: forward('info'), warn: forward('warn'), error: forward('error') };
}
