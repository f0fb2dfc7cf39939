import path from 'node:path';
import { z } from 'zod';
import type { TokenPolicy } from './auth/tokens.js';
import type { DatabaseDeadlines } from './db/connection.js';
import type { InputMediaOptions } from './inputs/input-media.js';

/**
 * The only reader of process.env. Every setting from API.md is parsed and validated here once, so the rest of
 * the code receives typed values and a bad value stops the start with a single line naming the variable.
 */

// A sign is allowed here so that "-5" is told it is too small, not that it is no number.
const intFrom = (min: number) =>
  z
    .string()
    .trim()
    .regex(/^[-+]?\d+$/, 'must be a whole number')
    .transform(Number)
    .pipe(
      z
        .number()
        .min(min, `must be at least ${min}`)
        .max(Number.MAX_SAFE_INTEGER, `must be at most ${Number.MAX_SAFE_INTEGER}`),
    );

const flag = z
  .enum(['true', 'false', '1', '0'], { error: 'must be true or false' })
  .transform((value) => value === 'true' || value === '1');

/** A comma-separated list of origins (`scheme://host[:port]`), each as a browser sends it in `Origin`. */
const origins = z
  .string()
  .transform((value) =>
    value
      .split(',')
      .map((origin) => origin.trim())
      .filter(Boolean),
  )
  .pipe(
    z.array(
      z
        .string()
        .regex(/^https?:\/\/[^/\s,]+$/, 'must list origins such as https://app.example.com (no path, no *)'),
    ),
  );

const url = z.url({ protocol: /^https?$/, error: 'must be an absolute http(s) URL' });

/** How a variable is documented: the README's configuration table and .env.example are written from this. */
export interface VariableDoc {
  /** What the variable does, in a line. */
  meaning: string;
  /** The default as a person reads it, for a variable whose default is not one fixed value ("unset: ..."). */
  defaultText?: string;
  /** A sample value, shown commented out in .env.example for a variable unset by default. */
  example?: string;
}

export const variableDocs = z.registry<VariableDoc>();

const documented = <T extends z.ZodType>(
  schema: T,
  meaning: string,
  more: Omit<VariableDoc, 'meaning'> = {},
) => {
  variableDocs.add(schema, { meaning, ...more });
  return schema;
};

export const envSchema = z.object({
  NODE_ENV: documented(
    z.enum(['development', 'production', 'test']).default('development'),
    '`production` refuses development tokens and the simulator, and turns the edge defaults below to their safe values',
    { example: 'production' },
  ),
  PORT: documented(
    intFrom(0).pipe(z.number().max(65535, 'must be at most 65535')).default(4000),
    'port to listen on',
  ),
  HOST: documented(z.string().min(1).default('0.0.0.0'), 'address to listen on'),
  PUBLIC_URL: documented(url.optional(), 'base URL kie uses to reach the callback endpoint', {
    defaultText: 'unset: `http://localhost:$PORT`',
    example: 'https://gateway.example.com',
  }),
  DATABASE_URL: documented(
    z
      .string()
      .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// URL')
      .optional(),
    'a Postgres URL; then postgres.js is the driver',
    { defaultText: 'unset: embedded PGlite', example: 'postgres://user:password@host:5432/avatar_gateway' },
  ),
  DATA_DIR: documented(
    z.string().min(1).default('.data'),
    'where the embedded database and the development token secret live',
  ),
  KIE_API_KEY: documented(z.string().min(1).optional(), 'your kie.ai API key', {
    defaultText: 'unset: built-in simulator',
    example: 'your-kie-api-key',
  }),
  KIE_API_URL: documented(url.default('https://api.kie.ai'), 'upstream base URL'),
  KIE_UPLOAD_URL: documented(url.default('https://kieai.redpandaai.co'), 'upstream file-upload base URL'),
  KIE_WEBHOOK_HMAC_KEY: documented(
    z.string().min(1).optional(),
    'when set, every callback must carry a valid signature made with this key',
    { example: 'your-webhook-hmac-key' },
  ),
  CONFIRM_CALLBACKS: documented(
    z.enum(['true', 'false'], { error: 'must be true or false' }).optional(),
    "a success callback is confirmed with one `recordInfo`, and kie's answer is what is stored",
    { defaultText: '`true` without `KIE_WEBHOOK_HMAC_KEY`, `false` with it', example: 'true' },
  ),
  AUTH_JWT_SECRET: documented(
    z.string().min(32, 'must be at least 32 characters (HS256 needs 256 bits)').optional(),
    'HS256 secret (32+ characters) for user tokens; no auth variable set: development mode',
    { example: 'a-random-secret-of-at-least-32-characters' },
  ),
  AUTH_JWKS_URL: documented(url.optional(), "verify tokens from an identity provider's JWKS instead", {
    example: 'https://idp.example.com/.well-known/jwks.json',
  }),
  AUTH_JWT_ISSUER: documented(z.string().min(1).optional(), 'the `iss` claim tokens must carry', {
    example: 'https://idp.example.com/',
  }),
  AUTH_JWT_AUDIENCE: documented(z.string().min(1).optional(), 'the `aud` claim tokens must carry', {
    example: 'avatar-gateway',
  }),
  AUTH_OPERATOR_CLAIM: documented(
    z.string().min(1).default('roles'),
    'the token claim that lists a user’s roles (a string, a space-separated string or an array)',
  ),
  AUTH_OPERATOR_ROLE: documented(
    z.string().min(1).default('operator'),
    'the role in `AUTH_OPERATOR_CLAIM` that may read operator-only fields (`kieAccount`)',
  ),
  AUTH_MAX_TOKEN_LIFETIME_S: documented(
    intFrom(1).optional(),
    'a token whose lifetime (`exp` - `iat`, or `exp` - now) is longer is refused',
    { defaultText: '`86400` in production, `2678400` otherwise', example: '86400' },
  ),
  POLL_INTERVAL_MS: documented(intFrom(10).default(1000), 'how often the poller looks for due tasks'),
  POLL_MIN_DELAY_MS: documented(intFrom(0).default(30_000), 'earliest first poll after a task is submitted'),
  POLL_MAX_DELAY_MS: documented(intFrom(1).default(300_000), "cap of the poller's backoff for one task"),
  WATCHED_POLL_INTERVAL_MS: documented(
    intFrom(100).default(1500),
    'while a live subscriber (on any instance) watches a task, it is checked with kie this often, before unwatched tasks and within `KIE_MAX_QUERIES_PER_S`, so a UI sees `QUEUING` and `GENERATING`',
  ),
  WATCHED_LEASE_MS: documented(
    intFrom(100).default(60_000),
    "how long a task stays marked watched without renewal (renewed every third of it while a stream is open, the renewal spread over half that time, 100 tasks a statement): a dead instance's watches lapse within it, and every open stream costs a row update that often",
  ),
  TASK_TIMEOUT_MS: documented(
    intFrom(1).default(1_800_000),
    'a task unfinished by then ends `FAILED` with `TIMEOUT`',
  ),
  SUBMIT_GRACE_MS: documented(
    intFrom(1).default(600_000),
    "how long a submit whose answer was lost waits for kie's callback before it ends `SUBMIT_UNCONFIRMED`",
  ),
  KIE_REQUEST_TIMEOUT_MS: documented(
    intFrom(1).default(30_000),
    'timeout of one query to kie (`recordInfo`, credits)',
  ),
  KIE_CREATE_TIMEOUT_MS: documented(
    intFrom(1).default(90_000),
    "how long a create waits for kie's answer; past it the outcome is unknown",
  ),
  KIE_CONNECT_TIMEOUT_MS: documented(
    intFrom(1).default(5_000),
    'how long connecting to kie may take; past it nothing was sent, and the create is queued again',
  ),
  TASK_LEASE_MS: documented(
    intFrom(100).default(10_000),
    "how long a task an instance works on stays its own unless renewed (every third of it, while the work runs); a dead instance's tasks are taken over after it",
  ),
  SHUTDOWN_TIMEOUT_MS: documented(
    intFrom(1).default(25_000),
    'on SIGTERM/SIGINT, the longest a draining stop takes before the process exits anyway (non-zero)',
  ),
  KIE_MAX_CREATES_PER_10S: documented(
    intFrom(1).default(20),
    "the gateway's own limit on creates sent to kie, for all instances on one database",
  ),
  KIE_MAX_QUERIES_PER_S: documented(
    intFrom(1).default(10),
    "the gateway's own limit on task queries sent to kie, per instance",
  ),
  KIE_CREDITS_CACHE_MS: documented(
    intFrom(1).default(60_000),
    'how long kie’s credit balance is cached, and how often it is read for the balance gauge and the low-credits warning',
  ),
  KIE_LOW_CREDITS_THRESHOLD: documented(
    intFrom(0).default(1_000),
    'a balance below this many credits is logged as a warning (once each time it falls below)',
  ),
  KIE_CREDITS_COOLDOWN_MS: documented(
    intFrom(1).default(30_000),
    "after kie's 402 (out of credits), creates answer `INSUFFICIENT_CREDITS` at once, without calling kie, for this long; then the next create is the probe",
  ),
  REDIS_URL: documented(
    z
      .string()
      .regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL')
      .optional(),
    'live updates cross instances through Redis pub/sub instead of Postgres LISTEN/NOTIFY',
    { example: 'redis://redis:6379' },
  ),
  SIMULATOR_STEP_MS: documented(
    intFrom(1).default(3000),
    "built-in simulator: time a task spends in each of kie's states",
  ),
  LOG_LEVEL: documented(
    z.enum(['debug', 'info', 'warn', 'error', 'silent']).default('info'),
    'JSON logs on stdout: `debug`, `info`, `warn`, `error` (or `silent`)',
  ),
  OTEL_EXPORTER_OTLP_ENDPOINT: documented(
    url.optional(),
    'an OpenTelemetry collector (OTLP/HTTP): traces of every task go there; unset, none are made',
    { example: 'http://otel-collector:4318' },
  ),
  OTEL_SERVICE_NAME: documented(
    z.string().min(1).default('avatar-gateway'),
    'the service name on those traces',
  ),
  MAX_SOCKETS_PER_USER: documented(
    intFrom(1).default(100),
    'open streams per user over every transport together (graphql-ws sockets and SSE streams)',
  ),
  MAX_SUBSCRIPTIONS_PER_SOCKET: documented(intFrom(1).default(50), 'operations per graphql-ws socket'),
  GRAPHIQL_ENABLED: documented(flag.optional(), 'serve GraphiQL', {
    defaultText: '`true`, except `false` in production',
    example: 'false',
  }),
  DEMO_ENABLED: documented(
    flag.optional(),
    'serve the [live demo page](#the-live-demo-page) at `/demo`; it mints development tokens in development mode only',
    { defaultText: '`true`, except `false` in production', example: 'false' },
  ),
  INTROSPECTION_ENABLED: documented(
    flag.optional(),
    'answer introspection (off also hides "Did you mean" suggestions)',
    { defaultText: '`true`, except `false` in production', example: 'false' },
  ),
  CORS_ORIGINS: documented(
    origins.optional(),
    'comma-separated origins (`https://app.example.com`) allowed cross-origin access, on HTTP, SSE and the WebSocket upgrade',
    {
      defaultText: 'unset: none in production, pages on localhost otherwise',
      example: 'https://app.example.com,https://admin.example.com',
    },
  ),
  CORS_CREDENTIALS: documented(
    flag.default(false),
    'send `Access-Control-Allow-Credentials: true` to the allowed origins',
  ),
  METRICS_TOKEN: documented(
    z.string().min(16, 'must be at least 16 characters').optional(),
    'when set (16+ characters), `/metrics` needs `Authorization: Bearer <it>`',
    {
      defaultText: 'unset: `/metrics` public outside production, 404 in production',
      example: 'a-long-random-metrics-token',
    },
  ),
  HTTP_HEADERS_TIMEOUT_MS: documented(
    intFrom(100).default(10_000),
    'a client must send its headers within this long',
  ),
  HTTP_REQUEST_TIMEOUT_MS: documented(
    intFrom(100).default(30_000),
    'a client must send its whole request within this long',
  ),
  HTTP_MAX_CONNECTIONS: documented(
    intFrom(1).default(20_000),
    'open TCP connections (HTTP and WebSocket) per instance; past it new ones are closed',
  ),
  HTTP_LISTEN_BACKLOG: documented(
    intFrom(1).default(4_096),
    'connections the kernel queues until the gateway accepts them (the kernel caps it at `net.core.somaxconn`); past it a connecting client waits for its TCP retry, 1 s and more',
  ),
  SINCE_REPLAY_PAGE_SIZE: documented(
    intFrom(1).default(100),
    'tasks a `since:` replay reads from the database at a time',
  ),
  SSE_RESERVATION_TTL_MS: documented(
    intFrom(100).default(10_000),
    'graphql-sse single connection mode: an unused reservation is dropped after this long',
  ),
  SSE_MAX_RESERVATIONS_PER_USER: documented(
    intFrom(1).default(5),
    'graphql-sse single connection mode: reservations one user holds',
  ),
  WS_MAX_PAYLOAD_BYTES: documented(intFrom(1024).default(64 * 1024), 'largest graphql-ws message'),
  WS_MAX_INIT_PAYLOAD_BYTES: documented(
    intFrom(256).default(8 * 1024),
    'largest first graphql-ws message (`connection_init`, before any token is checked)',
  ),
  WS_MAX_FRAGMENTS: documented(
    intFrom(1).default(16),
    'fragments of one unfinished graphql-ws message (zero-length ones count)',
  ),
  WS_MAX_BUFFERED_CHUNKS: documented(
    intFrom(16).default(1024),
    'network chunks buffered while a graphql-ws frame is incomplete',
  ),
  MAX_PENDING_SUBMITS: documented(
    intFrom(1).default(10_000),
    'tasks that may wait in the submit queue; past it creates answer `RATE_LIMITED`',
  ),
  DB_CONNECT_TIMEOUT_MS: documented(intFrom(1).default(4_000), 'deadline of opening one database connection'),
  DB_STATEMENT_TIMEOUT_MS: documented(
    intFrom(1).default(4_000),
    "deadline of each database query or transaction: the server's `statement_timeout`, the client's own deadline, and the silence after which a connection that owes an answer is taken for dead",
  ),
  DB_IDLE_TIMEOUT_MS: documented(
    intFrom(1).default(60_000),
    'an idle pooled connection is closed after this',
  ),
  DB_KEEPALIVE_MS: documented(intFrom(1).default(10_000), 'TCP keep-alive idle time on database connections'),
  DB_LISTEN_HEARTBEAT_MS: documented(
    intFrom(10).default(5_000),
    'the LISTEN connection must hear a notification it sent itself within this, or it is recycled',
  ),
  POLL_TICK_TIMEOUT_MS: documented(
    intFrom(1).default(10_000),
    'a poller tick that takes longer is abandoned and the next one scheduled',
  ),
  POLL_WORK_TIMEOUT_MS: documented(
    intFrom(1).default(60_000),
    "working one task (kie's answer and the writes) that takes longer is given up and retried",
  ),
  MAX_REQUEST_BODY_BYTES: documented(
    intFrom(1024).default(102_400),
    'a GraphQL request body over this is refused with 413',
  ),
  MAX_UPLOAD_REQUEST_BYTES: documented(
    intFrom(1024).optional(),
    'a multipart request (uploaded image and audio) over this is refused with 413',
    {
      defaultText: '`MAX_IMAGE_BYTES` + `MAX_AUDIO_BYTES` + `MAX_REQUEST_BODY_BYTES` + 64 KiB',
      example: '20167936',
    },
  ),
  MAX_IMAGE_BYTES: documented(
    intFrom(1).default(10_000_000),
    "largest image, uploaded or at a URL (kie's limit is 10 MB)",
  ),
  MAX_AUDIO_BYTES: documented(
    intFrom(1).default(10_000_000),
    "largest recording, uploaded or at a URL (kie's limit is 10 MB by its English docs)",
  ),
  KIE_UPLOAD_TIMEOUT_MS: documented(
    intFrom(1).default(60_000),
    "how long one upload to kie's file store may take, the bytes sent included",
  ),
  CHECK_INPUT_URLS: documented(
    flag.default(true),
    "URL inputs are fetched before submit: reachable, the right type, within size, the audio's duration; `false` sends them to kie unchecked",
  ),
  ALLOW_PRIVATE_INPUT_URLS: documented(
    flag.optional(),
    'the SSRF guard of input checks and result copies lets loopback, private and link-local addresses through',
    { defaultText: '`false` in production, `true` otherwise', example: 'false' },
  ),
  INPUT_CHECK_TIMEOUT_MS: documented(
    intFrom(1).default(5_000),
    'deadline of checking one URL input, redirects and range requests together',
  ),
  // At least what sniffing a type needs (file-type's 4100 bytes).
  INPUT_CHECK_MAX_BYTES: documented(
    intFrom(4100).default(1024 * 1024),
    'bytes the check may read from one URL input, over all its range requests',
  ),
  INPUT_CHECK_MAX_REDIRECTS: documented(
    intFrom(0).default(3),
    'redirects the check follows, each re-checked by the SSRF guard',
  ),
  MAX_QUERY_TOKENS: documented(intFrom(1).default(2_000), 'tokens in one GraphQL document'),
  MAX_QUERY_ALIASES: documented(intFrom(0).default(30), 'aliases in one GraphQL document'),
  MAX_QUERY_DEPTH: documented(intFrom(1).default(12), 'depth of one GraphQL document'),
  MAX_QUERY_DIRECTIVES: documented(intFrom(0).default(20), 'directives in one GraphQL document'),
  MAX_QUERY_COST: documented(
    intFrom(1).default(25_000),
    'cost limit, about 100 bytes of answer a unit: a field costs 1 (a long string 1 per 100 bytes it may hold), times the page size (`first:`) or list length above it',
  ),
  DOCUMENT_CACHE_BYTES: documented(
    intFrom(0).default(16 * 1024 * 1024),
    'estimated heap of the parsed, validated documents kept for reuse',
  ),
  MAX_UPDATE_BYTES: documented(
    intFrom(1024).default(256 * 1024),
    'one subscription update serialised over this ends the stream',
  ),
  MAX_BUFFERED_BYTES: documented(
    intFrom(1024).default(1024 * 1024),
    'a stream whose reader leaves more than this unread ends',
  ),
  MAX_ACTIVE_TASKS_PER_USER: documented(
    intFrom(1).default(20),
    'unfinished tasks one user may have at once; past it `QUOTA_EXCEEDED`',
  ),
  MAX_CREATES_PER_USER_PER_HOUR: documented(
    intFrom(1).default(200),
    'tasks one user may create in any hour; past it `QUOTA_EXCEEDED`',
  ),
  RESULT_STORAGE: documented(
    z.enum(['local', 's3', 'none'], { error: 'must be local, s3 or none' }).optional(),
    'where result videos are copied (see [Durable results](#durable-results)): `local`, `s3` or `none`',
    { defaultText: '`s3` with `S3_BUCKET`, else `local`', example: 'local' },
  ),
  RESULT_STORAGE_DIR: documented(z.string().min(1).optional(), 'the folder of local copies', {
    defaultText: 'unset: `$DATA_DIR/results`',
    example: '/var/lib/avatar-gateway/results',
  }),
  RESULT_URL_SIGNING_KEY: documented(
    z.string().min(32, 'must be at least 32 characters').optional(),
    "HMAC key (32+ characters) of the local copies' signed URLs; give every instance the same",
    { defaultText: 'unset: a random key kept in `DATA_DIR`' },
  ),
  RESULT_URL_TTL_S: documented(
    intFrom(1).pipe(z.number().max(604_800, 'must be at most 604800 (S3 allows 7 days)')).default(3_600),
    'lifetime of a signed (local) or presigned (S3) result URL; at most 7 days',
  ),
  RESULT_RETENTION_S: documented(
    intFrom(1).default(30 * 86_400),
    'a copy is deleted this long after it was stored; the task then lists no video',
  ),
  RESULT_MAX_BYTES: documented(
    intFrom(1).default(500 * 1024 * 1024),
    'a result larger than this is not copied',
  ),
  RESULT_COPY_TIMEOUT_MS: documented(
    intFrom(1).default(300_000),
    'deadline of one copy attempt (download and upload)',
  ),
  RESULT_COPY_ATTEMPTS: documented(intFrom(1).default(20), 'attempts before a copy is given up'),
  RESULT_COPY_RETRY_MS: documented(
    intFrom(1).default(5_000),
    'first backoff between copy attempts; it doubles (jittered) up to `RESULT_COPY_RETRY_MAX_MS`',
  ),
  RESULT_COPY_RETRY_MAX_MS: documented(
    intFrom(1).default(1_800_000),
    'longest backoff between copy attempts',
  ),
  RESULT_COPY_CONCURRENCY: documented(intFrom(1).default(2), 'copies one instance runs at once'),
  RESULT_COPY_INTERVAL_MS: documented(
    intFrom(10).default(5_000),
    "how often an instance looks for due copies (retries, another instance's); its own SUCCEEDED tasks start at once",
  ),
  KIE_RESULT_URL_FRESH_S: documented(
    intFrom(0).default(3_600),
    "while no copy exists, kie's own result URL is given for this long after `SUCCEEDED`, then a fresh link from kie's download-url",
  ),
  S3_BUCKET: documented(
    z.string().min(3, 'must be a bucket name').optional(),
    'an S3-compatible bucket for the copies (the gateway does not create it)',
    { example: 'avatar-results' },
  ),
  S3_REGION: documented(z.string().min(1).default('us-east-1'), "the bucket's region"),
  S3_ENDPOINT: documented(url.optional(), 'endpoint of a non-AWS server (MinIO, R2...)', {
    example: 'http://minio:9000',
  }),
  S3_PUBLIC_ENDPOINT: documented(
    url.optional(),
    'the endpoint presigned URLs name, when players reach the bucket by another address than the gateway',
    { defaultText: 'unset: `S3_ENDPOINT`', example: 'http://localhost:9000' },
  ),
  S3_FORCE_PATH_STYLE: documented(flag.default(false), 'path-style bucket addressing (MinIO needs it)'),
  S3_ACCESS_KEY_ID: documented(z.string().min(1).optional(), "the bucket's access key", {
    defaultText: "unset: the AWS SDK's default chain",
  }),
  S3_SECRET_ACCESS_KEY: documented(z.string().min(1).optional(), "the bucket's secret key", {
    defaultText: "unset: the AWS SDK's default chain",
  }),
  S3_PREFIX: documented(z.string().default('results/'), 'key prefix of the copies in the bucket'),
});

export type Env = z.input<typeof envSchema>;

export interface Config {
  /** Settings that work but are unsafe where they are (production); logged at start, one line each. */
  warnings: string[];
  nodeEnv: 'development' | 'production' | 'test';
  port: number;
  host: string;
  /** Base URL kie uses to reach the callback endpoint; undefined means "derive from the bound port". */
  publicUrl: string | undefined;
  databaseUrl: string | undefined;
  dataDir: string;
  kie: {
    /** undefined: run the built-in simulator mounted in this gateway. */
    apiKey: string | undefined;
    apiUrl: string;
    uploadUrl: string;
    webhookHmacKey: string | undefined;
    /** A success callback is checked with one recordInfo before its result is stored. */
    confirmCallbacks: boolean;
    requestTimeoutMs: number;
    /** A create's wait for kie's answer; past it the outcome is unknown. */
    createTimeoutMs: number;
    /** Establishing a connection to kie; past it nothing was sent. */
    connectTimeoutMs: number;
    maxCreatesPer10s: number;
    maxQueriesPerSecond: number;
    /** After kie's 402, how long creates are refused without calling kie before one is tried again. */
    creditsCooldownMs: number;
    /** How long the account's balance is kept, and how often it is read. */
    creditsCacheMs: number;
    /** A balance below this is logged as a warning. */
    lowCreditsThreshold: number;
    /** One file upload to kie, the bytes sent included. */
    uploadTimeoutMs: number;
  };
  /** URL inputs checked before submit and uploads inspected: what kie takes, through the SSRF guard. */
  inputs: InputMediaOptions;
  auth:
    | { mode: 'development' }
    | { mode: 'secret'; secret: string; issuer?: string; audience?: string }
    | { mode: 'jwks'; jwksUrl: string; issuer?: string; audience?: string };
  /** What a token must be beyond a valid signature. */
  tokenPolicy: TokenPolicy;
  poller: {
    intervalMs: number;
    minDelayMs: number;
    maxDelayMs: number;
    taskTimeoutMs: number;
    /** How long a submit with an unknown outcome may wait for kie's callback to claim it. */
    submitGraceMs: number;
    maxPendingSubmits: number;
    /** How long a task worked by an instance stays its own unless renewed (renewed while the work runs). */
    leaseMs: number;
    /** A tick (finding due tasks) that takes longer is abandoned and the next one scheduled. */
    tickTimeoutMs: number;
    /** Working one task (kie's answer and the writes) that takes longer is given up and retried later. */
    workTimeoutMs: number;
    /** How often a task a live subscriber watches is checked with kie, within KIE_MAX_QUERIES_PER_S. */
    watchedIntervalMs: number;
    /** How long a watch mark holds without renewal (WATCHED_LEASE_MS). */
    watchedLeaseMs: number;
  };
  /** Deadlines of every wait on the database (postgres.js and PGlite alike). */
  database: DatabaseDeadlines & {
    /** How often the LISTEN connection is sent a notification of its own, which it must hear before the next. */
    listenHeartbeatMs: number;
  };
  /** On SIGTERM/SIGINT, the longest a draining shutdown may take before the process exits anyway. */
  shutdownTimeoutMs: number;
  redisUrl: string | undefined;
  simulatorStepMs: number;
  logLevel: 'debug' | 'info' | 'warn' | 'error' | 'silent';
  /** OpenTelemetry traces go to this OTLP/HTTP collector when set; none are made otherwise. */
  tracing: { otlpEndpoint: string; serviceName: string } | undefined;
  limits: {
    maxSocketsPerUser: number;
    maxSubscriptionsPerSocket: number;
    /** A GraphQL request body (any transport over HTTP) larger than this is refused with 413. */
    maxRequestBodyBytes: number;
    /** The same for a multipart request, which carries the uploaded files besides the operation. */
    maxUploadRequestBytes: number;
    /** Checked on every operation, before any cache keeps it. */
    query: QueryLimits;
    /** Total estimated size of the parsed documents kept for reuse. */
    documentCacheBytes: number;
    /** One subscription update serialised larger than this ends the stream. */
    maxUpdateBytes: number;
    /** A stream whose reader leaves more than this unread ends. */
    maxBufferedBytes: number;
  };
  /** What the gateway shows and to whom, at the edge (see README, "Security and limits"). */
  edge: EdgeConfig;
  /** Tasks a `since:` replay reads from the database at a time. */
  sinceReplayPageSize: number;
  /** graphql-sse's single connection mode: how long an unused reservation lives, how many a user holds. */
  sseReservations: { ttlMs: number; maxPerUser: number };
  /** What one graphql-ws socket may make the server hold (see websocket.ts). */
  webSocket: WebSocketLimits;
  /** What one user may have; past either cap createAvatarTask answers QUOTA_EXCEEDED. */
  quotas: { maxActiveTasksPerUser: number; maxCreatesPerUserPerHour: number };
  /** The gateway's own copies of result videos (README, "Durable results"). */
  storage: StorageConfig;
}

export interface StorageConfig {
  backend: { kind: 'local'; directory: string } | ({ kind: 's3' } & S3Settings) | { kind: 'none' };
  /** HMAC key of the local folder's signed URLs; undefined: a random one kept in DATA_DIR. */
  signingKey: string | undefined;
  /** Lifetime of a signed (local) or presigned (S3) result URL. */
  urlTtlS: number;
  /** A copy is deleted this long after it was stored. */
  retentionS: number;
  /** A result larger than this is not copied. */
  maxBytes: number;
  /** One copy attempt (download and upload) that takes longer is abandoned and retried. */
  copyTimeoutMs: number;
  copyAttempts: number;
  /** Backoff between attempts: doubles from `retryMs`, at most `retryMaxMs`. */
  retryMs: number;
  retryMaxMs: number;
  /** Copies one instance runs at once. */
  concurrency: number;
  /** How often an instance looks for due copies besides those of its own SUCCEEDED tasks (retries, takeovers). */
  copyIntervalMs: number;
  /** kie's own result URL is handed out as it is for this long after SUCCEEDED; later it is refreshed. */
  kieUrlFreshS: number;
}

export interface S3Settings {
  bucket: string;
  region: string;
  endpoint: string | undefined;
  /** The endpoint presigned URLs name, when players reach the bucket by another address than the gateway. */
  publicEndpoint: string | undefined;
  forcePathStyle: boolean;
  /** Unset: the SDK's default credential chain (environment, profile, instance role). */
  credentials: { accessKeyId: string; secretAccessKey: string } | undefined;
  prefix: string;
}

export interface QueryLimits {
  maxTokens: number;
  maxAliases: number;
  maxDepth: number;
  maxDirectives: number;
  maxCost: number;
}

export interface EdgeConfig {
  graphiqlEnabled: boolean;
  /** The live demo page at /demo. */
  demoEnabled: boolean;
  /** Off also hides "Did you mean ...?" suggestions, which would tell the schema field by field. */
  introspectionEnabled: boolean;
  /**
   * Origins allowed cross-origin access. `localhost` means any origin on localhost, 127.0.0.1 or [::1] (the
   * default outside production); an empty list allows none.
   */
  corsOrigins: string[] | 'localhost';
  corsCredentials: boolean;
  /** When set, /metrics needs `Authorization: Bearer <it>`; unset in production, /metrics is not served. */
  metricsToken: string | undefined;
  /** Served when no token is set: outside production only. */
  publicMetrics: boolean;
  /** HSTS is sent when the gateway is reached over https (PUBLIC_URL). */
  https: boolean;
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  maxConnections: number;
  /**
   * listen()'s backlog. Every client of an instance reconnects within a second of its restart; with node's
   * default (511) the rest of such a storm overflowed the accept queue, and each dropped connection waited
   * for its SYN to be sent again, 1 s later and then 3 s (`npm run bench -- --only reconnect-storm`).
   */
  listenBacklog: number;
}

export interface WebSocketLimits {
  /** Largest message, all its fragments together. */
  maxPayloadBytes: number;
  /** Largest first message (connection_init), which arrives before the token is known. */
  maxInitPayloadBytes: number;
  /** Fragments of one unfinished message. */
  maxFragments: number;
  /** Network chunks buffered while a frame is incomplete. */
  maxBufferedChunks: number;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

type ParsedEnv = z.output<typeof envSchema>;

/**
 * Parses an environment into a Config, or throws a ConfigError whose message is one line naming every bad
 * variable with its reason. Settings that work but are unsafe in production come back as `warnings`.
 */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  // Empty strings mean "unset", as docker-compose passes `${VAR:-}` through.
  const present = Object.fromEntries(
    Object.entries(env).filter(([, value]) => value !== undefined && value !== ''),
  );
  // Each variable on its own, so that every bad one is reported at once, and the checks across variables
  // still run on the ones that parsed.
  const problems: string[] = [];
  const parsed: Partial<ParsedEnv> = {};
  for (const [name, schema] of Object.entries(envSchema.shape)) {
    const result = schema.safeParse(present[name]);
    if (result.success) (parsed as Record<string, unknown>)[name] = result.data;
    else problems.push(`${name} ${result.error.issues[0]?.message ?? 'is invalid'}`);
  }
  problems.push(...crossVariableProblems(parsed, present));
  if (problems.length > 0) throw new ConfigError(`Invalid configuration: ${problems.join('; ')}`);
  const e = envSchema.parse(present);
  const claims = { issuer: e.AUTH_JWT_ISSUER, audience: e.AUTH_JWT_AUDIENCE };
  const auth: Config['auth'] = e.AUTH_JWT_SECRET
    ? { mode: 'secret', secret: e.AUTH_JWT_SECRET, ...claims }
    : e.AUTH_JWKS_URL
      ? { mode: 'jwks', jwksUrl: e.AUTH_JWKS_URL, ...claims }
      : { mode: 'development' };

  const storageKind = e.RESULT_STORAGE ?? (e.S3_BUCKET ? 's3' : 'local');
  const backend: StorageConfig['backend'] =
    storageKind === 's3'
      ? {
          kind: 's3',
          bucket: e.S3_BUCKET ?? '',
          region: e.S3_REGION,
          endpoint: e.S3_ENDPOINT,
          publicEndpoint: e.S3_PUBLIC_ENDPOINT,
          forcePathStyle: e.S3_FORCE_PATH_STYLE,
          credentials:
            e.S3_ACCESS_KEY_ID && e.S3_SECRET_ACCESS_KEY
              ? { accessKeyId: e.S3_ACCESS_KEY_ID, secretAccessKey: e.S3_SECRET_ACCESS_KEY }
              : undefined,
          prefix: e.S3_PREFIX,
        }
      : storageKind === 'local'
        ? { kind: 'local', directory: e.RESULT_STORAGE_DIR ?? path.join(e.DATA_DIR, 'results') }
        : { kind: 'none' };

  return {
    warnings: productionWarnings(e),
    nodeEnv: e.NODE_ENV,
    port: e.PORT,
    host: e.HOST,
    publicUrl: e.PUBLIC_URL?.replace(/\/+$/, ''),
    databaseUrl: e.DATABASE_URL,
    dataDir: e.DATA_DIR,
    kie: {
      apiKey: e.KIE_API_KEY,
      apiUrl: e.KIE_API_URL.replace(/\/+$/, ''),
      uploadUrl: e.KIE_UPLOAD_URL.replace(/\/+$/, ''),
      webhookHmacKey: e.KIE_WEBHOOK_HMAC_KEY,
      // Without a signature nothing but the URL's secret vouches for a callback's body.
      confirmCallbacks: e.CONFIRM_CALLBACKS ? e.CONFIRM_CALLBACKS === 'true' : !e.KIE_WEBHOOK_HMAC_KEY,
      requestTimeoutMs: e.KIE_REQUEST_TIMEOUT_MS,
      createTimeoutMs: e.KIE_CREATE_TIMEOUT_MS,
      connectTimeoutMs: e.KIE_CONNECT_TIMEOUT_MS,
      maxCreatesPer10s: e.KIE_MAX_CREATES_PER_10S,
      maxQueriesPerSecond: e.KIE_MAX_QUERIES_PER_S,
      creditsCooldownMs: e.KIE_CREDITS_COOLDOWN_MS,
      creditsCacheMs: e.KIE_CREDITS_CACHE_MS,
      lowCreditsThreshold: e.KIE_LOW_CREDITS_THRESHOLD,
      uploadTimeoutMs: e.KIE_UPLOAD_TIMEOUT_MS,
    },
    inputs: {
      checkUrls: e.CHECK_INPUT_URLS,
      // Development and tests serve their media from localhost.
      allowPrivate: e.ALLOW_PRIVATE_INPUT_URLS ?? e.NODE_ENV !== 'production',
      checkTimeoutMs: e.INPUT_CHECK_TIMEOUT_MS,
      checkMaxBytes: e.INPUT_CHECK_MAX_BYTES,
      checkMaxRedirects: e.INPUT_CHECK_MAX_REDIRECTS,
      maxImageBytes: e.MAX_IMAGE_BYTES,
      maxAudioBytes: e.MAX_AUDIO_BYTES,
    },
    auth,
    tokenPolicy: {
      // Production: a day. Elsewhere long enough for the 30-day tokens development mode signs.
      maxLifetimeS: e.AUTH_MAX_TOKEN_LIFETIME_S ?? (e.NODE_ENV === 'production' ? 86_400 : 31 * 86_400),
      operatorRole: { claim: e.AUTH_OPERATOR_CLAIM, role: e.AUTH_OPERATOR_ROLE },
    },
    poller: {
      intervalMs: e.POLL_INTERVAL_MS,
      minDelayMs: e.POLL_MIN_DELAY_MS,
      maxDelayMs: e.POLL_MAX_DELAY_MS,
      taskTimeoutMs: e.TASK_TIMEOUT_MS,
      submitGraceMs: e.SUBMIT_GRACE_MS,
      maxPendingSubmits: e.MAX_PENDING_SUBMITS,
      leaseMs: e.TASK_LEASE_MS,
      tickTimeoutMs: e.POLL_TICK_TIMEOUT_MS,
      workTimeoutMs: e.POLL_WORK_TIMEOUT_MS,
      watchedIntervalMs: e.WATCHED_POLL_INTERVAL_MS,
      watchedLeaseMs: e.WATCHED_LEASE_MS,
    },
    database: {
      connectTimeoutMs: e.DB_CONNECT_TIMEOUT_MS,
      statementTimeoutMs: e.DB_STATEMENT_TIMEOUT_MS,
      idleTimeoutMs: e.DB_IDLE_TIMEOUT_MS,
      keepAliveMs: e.DB_KEEPALIVE_MS,
      listenHeartbeatMs: e.DB_LISTEN_HEARTBEAT_MS,
    },
    shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT_MS,
    redisUrl: e.REDIS_URL,
    simulatorStepMs: e.SIMULATOR_STEP_MS,
    logLevel: e.LOG_LEVEL,
    tracing: e.OTEL_EXPORTER_OTLP_ENDPOINT
      ? { otlpEndpoint: e.OTEL_EXPORTER_OTLP_ENDPOINT, serviceName: e.OTEL_SERVICE_NAME }
      : undefined,
    limits: {
      maxSocketsPerUser: e.MAX_SOCKETS_PER_USER,
      maxSubscriptionsPerSocket: e.MAX_SUBSCRIPTIONS_PER_SOCKET,
      maxRequestBodyBytes: e.MAX_REQUEST_BODY_BYTES,
      // Both files at their largest, plus room for the operation and the multipart framing.
      maxUploadRequestBytes:
        e.MAX_UPLOAD_REQUEST_BYTES ??
        e.MAX_IMAGE_BYTES + e.MAX_AUDIO_BYTES + e.MAX_REQUEST_BODY_BYTES + 65_536,
      query: {
        maxTokens: e.MAX_QUERY_TOKENS,
        maxAliases: e.MAX_QUERY_ALIASES,
        maxDepth: e.MAX_QUERY_DEPTH,
        maxDirectives: e.MAX_QUERY_DIRECTIVES,
        maxCost: e.MAX_QUERY_COST,
      },
      documentCacheBytes: e.DOCUMENT_CACHE_BYTES,
      maxUpdateBytes: e.MAX_UPDATE_BYTES,
      maxBufferedBytes: e.MAX_BUFFERED_BYTES,
    },
    edge: {
      graphiqlEnabled: e.GRAPHIQL_ENABLED ?? e.NODE_ENV !== 'production',
      demoEnabled: e.DEMO_ENABLED ?? e.NODE_ENV !== 'production',
      introspectionEnabled: e.INTROSPECTION_ENABLED ?? e.NODE_ENV !== 'production',
      corsOrigins: e.CORS_ORIGINS ?? (e.NODE_ENV === 'production' ? [] : 'localhost'),
      corsCredentials: e.CORS_CREDENTIALS,
      metricsToken: e.METRICS_TOKEN,
      publicMetrics: e.NODE_ENV !== 'production',
      https: e.PUBLIC_URL?.startsWith('https://') ?? false,
      headersTimeoutMs: e.HTTP_HEADERS_TIMEOUT_MS,
      requestTimeoutMs: Math.max(e.HTTP_REQUEST_TIMEOUT_MS, e.HTTP_HEADERS_TIMEOUT_MS),
      maxConnections: e.HTTP_MAX_CONNECTIONS,
      listenBacklog: e.HTTP_LISTEN_BACKLOG,
    },
    sinceReplayPageSize: e.SINCE_REPLAY_PAGE_SIZE,
    sseReservations: { ttlMs: e.SSE_RESERVATION_TTL_MS, maxPerUser: e.SSE_MAX_RESERVATIONS_PER_USER },
    webSocket: {
      maxPayloadBytes: e.WS_MAX_PAYLOAD_BYTES,
      maxInitPayloadBytes: Math.min(e.WS_MAX_INIT_PAYLOAD_BYTES, e.WS_MAX_PAYLOAD_BYTES),
      maxFragments: e.WS_MAX_FRAGMENTS,
      maxBufferedChunks: e.WS_MAX_BUFFERED_CHUNKS,
    },
    quotas: {
      maxActiveTasksPerUser: e.MAX_ACTIVE_TASKS_PER_USER,
      maxCreatesPerUserPerHour: e.MAX_CREATES_PER_USER_PER_HOUR,
    },
    storage: {
      backend,
      signingKey: e.RESULT_URL_SIGNING_KEY,
      urlTtlS: e.RESULT_URL_TTL_S,
      retentionS: e.RESULT_RETENTION_S,
      maxBytes: e.RESULT_MAX_BYTES,
      copyTimeoutMs: e.RESULT_COPY_TIMEOUT_MS,
      copyAttempts: e.RESULT_COPY_ATTEMPTS,
      retryMs: e.RESULT_COPY_RETRY_MS,
      retryMaxMs: Math.max(e.RESULT_COPY_RETRY_MAX_MS, e.RESULT_COPY_RETRY_MS),
      concurrency: e.RESULT_COPY_CONCURRENCY,
      copyIntervalMs: e.RESULT_COPY_INTERVAL_MS,
      kieUrlFreshS: e.KIE_RESULT_URL_FRESH_S,
    },
  };
}

/** What is wrong across variables; a variable that did not parse is not judged again here. */
function crossVariableProblems(e: Partial<ParsedEnv>, present: Record<string, string | undefined>): string[] {
  const problems: string[] = [];
  if (
    e.POLL_MAX_DELAY_MS !== undefined &&
    e.POLL_MIN_DELAY_MS !== undefined &&
    e.POLL_MAX_DELAY_MS < e.POLL_MIN_DELAY_MS
  ) {
    problems.push('POLL_MAX_DELAY_MS must be at least POLL_MIN_DELAY_MS');
  }
  if (
    e.KIE_CONNECT_TIMEOUT_MS !== undefined &&
    e.KIE_CREATE_TIMEOUT_MS !== undefined &&
    e.KIE_CONNECT_TIMEOUT_MS >= e.KIE_CREATE_TIMEOUT_MS
  ) {
    // Else a create could time out while still connecting, and be taken for one that may have been sent.
    problems.push('KIE_CONNECT_TIMEOUT_MS must be less than KIE_CREATE_TIMEOUT_MS');
  }
  if (present.AUTH_JWT_SECRET && present.AUTH_JWKS_URL) {
    problems.push('set AUTH_JWT_SECRET or AUTH_JWKS_URL, not both');
  }
  if (e.RESULT_STORAGE === 's3' && !present.S3_BUCKET) problems.push('RESULT_STORAGE=s3 needs S3_BUCKET');
  if (Boolean(present.S3_ACCESS_KEY_ID) !== Boolean(present.S3_SECRET_ACCESS_KEY)) {
    problems.push('set both S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY, or neither');
  }
  if (e.NODE_ENV === 'production') {
    if (!present.AUTH_JWT_SECRET && !present.AUTH_JWKS_URL) {
      problems.push(
        'NODE_ENV=production needs AUTH_JWT_SECRET or AUTH_JWKS_URL (development tokens are refused)',
      );
    }
    if (!present.KIE_API_KEY) {
      problems.push('NODE_ENV=production needs KIE_API_KEY (the built-in simulator is refused)');
    }
    if (present.REDIS_URL && !present.DATABASE_URL) {
      // Each instance would have an embedded database of its own: Redis would tell them of tasks they
      // cannot read, and a task would live on one instance only.
      problems.push(
        'REDIS_URL is for several instances, which cannot share an embedded PGlite: set DATABASE_URL',
      );
    }
  }
  return problems;
}

const LOCAL_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]', '0.0.0.0']);

/** Settings that start a working gateway in production but should not stay: each is logged at start. */
function productionWarnings(e: ParsedEnv): string[] {
  if (e.NODE_ENV !== 'production') return [];
  const warnings: string[] = [];
  if (!e.DATABASE_URL) {
    warnings.push(
      'DATABASE_URL is not set: the embedded PGlite serves this one instance only and lives in DATA_DIR; use Postgres in production',
    );
  }
  const publicHost = e.PUBLIC_URL ? new URL(e.PUBLIC_URL).hostname : 'localhost';
  if (LOCAL_HOSTS.has(publicHost) || publicHost.endsWith('.localhost')) {
    warnings.push(
      `PUBLIC_URL ${e.PUBLIC_URL ? `is ${e.PUBLIC_URL}` : 'is not set'}: kie.ai cannot reach callbacks on ${publicHost}, so tasks finish only when polled (POLL_MIN_DELAY_MS and later); set it to the gateway's public base URL`,
    );
  }
  if (e.GRAPHIQL_ENABLED)
    warnings.push('GRAPHIQL_ENABLED is true: GraphiQL is served to anyone in production');
  if (e.INTROSPECTION_ENABLED) {
    warnings.push('INTROSPECTION_ENABLED is true: anyone can read the whole schema in production');
  }
  if (!e.METRICS_TOKEN) {
    warnings.push('METRICS_TOKEN is not set: /metrics is not served (set it to scrape with a bearer token)');
  }
  return warnings;
}
