import { z } from 'zod';
import type { DatabaseDeadlines } from './db/connection.js';

/**
 * The only reader of process.env. Every setting from API.md is parsed and validated here once, so the rest of
 * the code receives typed values and a bad value stops the start with a single line naming the variable.
 */

const intFrom = (min: number) =>
  z
    .string()
    .regex(/^\d+$/, 'must be a whole number')
    .transform(Number)
    .pipe(z.number().int().min(min, `must be at least ${min}`));

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

const envSchema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  PORT: intFrom(0).pipe(z.number().max(65535, 'must be at most 65535')).default(4000),
  HOST: z.string().min(1).default('0.0.0.0'),
  PUBLIC_URL: url.optional(),
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// URL')
    .optional(),
  DATA_DIR: z.string().min(1).default('.data'),
  KIE_API_KEY: z.string().min(1).optional(),
  KIE_API_URL: url.default('https://api.kie.ai'),
  KIE_UPLOAD_URL: url.default('https://kieai.redpandaai.co'),
  KIE_WEBHOOK_HMAC_KEY: z.string().min(1).optional(),
  CONFIRM_CALLBACKS: z.enum(['true', 'false'], { error: 'must be true or false' }).optional(),
  AUTH_JWT_SECRET: z.string().min(32, 'must be at least 32 characters (HS256 needs 256 bits)').optional(),
  AUTH_JWKS_URL: url.optional(),
  AUTH_JWT_ISSUER: z.string().min(1).optional(),
  AUTH_JWT_AUDIENCE: z.string().min(1).optional(),
  AUTH_MAX_TOKEN_LIFETIME_S: intFrom(1).optional(),
  POLL_INTERVAL_MS: intFrom(10).default(1000),
  POLL_MIN_DELAY_MS: intFrom(0).default(30_000),
  POLL_MAX_DELAY_MS: intFrom(1).default(300_000),
  WATCHED_POLL_INTERVAL_MS: intFrom(100).default(1500),
  TASK_TIMEOUT_MS: intFrom(1).default(1_800_000),
  SUBMIT_GRACE_MS: intFrom(1).default(600_000),
  KIE_REQUEST_TIMEOUT_MS: intFrom(1).default(30_000),
  KIE_CREATE_TIMEOUT_MS: intFrom(1).default(90_000),
  KIE_CONNECT_TIMEOUT_MS: intFrom(1).default(5_000),
  TASK_LEASE_MS: intFrom(100).default(10_000),
  SHUTDOWN_TIMEOUT_MS: intFrom(1).default(25_000),
  KIE_MAX_CREATES_PER_10S: intFrom(1).default(20),
  KIE_MAX_QUERIES_PER_S: intFrom(1).default(10),
  REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL')
    .optional(),
  SIMULATOR_STEP_MS: intFrom(1).default(3000),
  LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error', 'silent']).default('info'),
  MAX_SOCKETS_PER_USER: intFrom(1).default(100),
  MAX_SUBSCRIPTIONS_PER_SOCKET: intFrom(1).default(50),
  GRAPHIQL_ENABLED: flag.optional(),
  INTROSPECTION_ENABLED: flag.optional(),
  CORS_ORIGINS: origins.optional(),
  CORS_CREDENTIALS: flag.default(false),
  METRICS_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),
  HTTP_HEADERS_TIMEOUT_MS: intFrom(100).default(10_000),
  HTTP_REQUEST_TIMEOUT_MS: intFrom(100).default(30_000),
  HTTP_MAX_CONNECTIONS: intFrom(1).default(20_000),
  SINCE_REPLAY_PAGE_SIZE: intFrom(1).default(100),
  SSE_RESERVATION_TTL_MS: intFrom(100).default(10_000),
  SSE_MAX_RESERVATIONS_PER_USER: intFrom(1).default(5),
  WS_MAX_PAYLOAD_BYTES: intFrom(1024).default(64 * 1024),
  WS_MAX_INIT_PAYLOAD_BYTES: intFrom(256).default(8 * 1024),
  WS_MAX_FRAGMENTS: intFrom(1).default(16),
  WS_MAX_BUFFERED_CHUNKS: intFrom(16).default(1024),
  MAX_PENDING_SUBMITS: intFrom(1).default(10_000),
  DB_CONNECT_TIMEOUT_MS: intFrom(1).default(4_000),
  DB_STATEMENT_TIMEOUT_MS: intFrom(1).default(4_000),
  DB_IDLE_TIMEOUT_MS: intFrom(1).default(60_000),
  DB_KEEPALIVE_MS: intFrom(1).default(10_000),
  DB_LISTEN_HEARTBEAT_MS: intFrom(10).default(5_000),
  POLL_TICK_TIMEOUT_MS: intFrom(1).default(10_000),
  POLL_WORK_TIMEOUT_MS: intFrom(1).default(60_000),
  MAX_REQUEST_BODY_BYTES: intFrom(1024).default(102_400),
  MAX_QUERY_TOKENS: intFrom(1).default(2_000),
  MAX_QUERY_ALIASES: intFrom(0).default(30),
  MAX_QUERY_DEPTH: intFrom(1).default(12),
  MAX_QUERY_DIRECTIVES: intFrom(0).default(20),
  MAX_QUERY_COST: intFrom(1).default(25_000),
  DOCUMENT_CACHE_BYTES: intFrom(0).default(16 * 1024 * 1024),
  MAX_UPDATE_BYTES: intFrom(1024).default(256 * 1024),
  MAX_BUFFERED_BYTES: intFrom(1024).default(1024 * 1024),
  MAX_ACTIVE_TASKS_PER_USER: intFrom(1).default(20),
  MAX_CREATES_PER_USER_PER_HOUR: intFrom(1).default(200),
});

export type Env = z.input<typeof envSchema>;

export interface Config {
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
  };
  auth:
    | { mode: 'development' }
    | { mode: 'secret'; secret: string; issuer?: string; audience?: string }
    | { mode: 'jwks'; jwksUrl: string; issuer?: string; audience?: string };
  /** What a token must be beyond a valid signature. */
  tokenPolicy: { maxLifetimeS: number };
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
  limits: {
    maxSocketsPerUser: number;
    maxSubscriptionsPerSocket: number;
    /** A GraphQL request body (any transport over HTTP) larger than this is refused with 413. */
    maxRequestBodyBytes: number;
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

/** Parses an environment into a Config, or throws a ConfigError whose message is one line. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  // Empty strings mean "unset", as docker-compose passes `${VAR:-}` through.
  const present = Object.fromEntries(
    Object.entries(env).filter(([, value]) => value !== undefined && value !== ''),
  );
  const parsed = envSchema.safeParse(present);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const variable = issue?.path.join('.') ?? 'environment';
    throw new ConfigError(`Invalid configuration: ${variable} ${issue?.message ?? 'is invalid'}`);
  }
  const e = parsed.data;
  if (e.POLL_MAX_DELAY_MS < e.POLL_MIN_DELAY_MS) {
    throw new ConfigError('Invalid configuration: POLL_MAX_DELAY_MS must be at least POLL_MIN_DELAY_MS');
  }
  if (e.KIE_CONNECT_TIMEOUT_MS >= e.KIE_CREATE_TIMEOUT_MS) {
    // Else a create could time out while still connecting, and be taken for one that may have been sent.
    throw new ConfigError(
      'Invalid configuration: KIE_CONNECT_TIMEOUT_MS must be less than KIE_CREATE_TIMEOUT_MS',
    );
  }
  if (e.AUTH_JWT_SECRET && e.AUTH_JWKS_URL) {
    throw new ConfigError('Invalid configuration: set AUTH_JWT_SECRET or AUTH_JWKS_URL, not both');
  }
  const claims = { issuer: e.AUTH_JWT_ISSUER, audience: e.AUTH_JWT_AUDIENCE };
  const auth: Config['auth'] = e.AUTH_JWT_SECRET
    ? { mode: 'secret', secret: e.AUTH_JWT_SECRET, ...claims }
    : e.AUTH_JWKS_URL
      ? { mode: 'jwks', jwksUrl: e.AUTH_JWKS_URL, ...claims }
      : { mode: 'development' };

  if (e.NODE_ENV === 'production') {
    if (auth.mode === 'development') {
      throw new ConfigError(
        'Invalid configuration: NODE_ENV=production needs AUTH_JWT_SECRET or AUTH_JWKS_URL (development tokens are refused)',
      );
    }
    if (!e.KIE_API_KEY) {
      throw new ConfigError(
        'Invalid configuration: NODE_ENV=production needs KIE_API_KEY (the built-in simulator is refused)',
      );
    }
  }

  return {
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
    },
    auth,
    tokenPolicy: {
      // Production: a day. Elsewhere long enough for the 30-day tokens development mode signs.
      maxLifetimeS: e.AUTH_MAX_TOKEN_LIFETIME_S ?? (e.NODE_ENV === 'production' ? 86_400 : 31 * 86_400),
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
    limits: {
      maxSocketsPerUser: e.MAX_SOCKETS_PER_USER,
      maxSubscriptionsPerSocket: e.MAX_SUBSCRIPTIONS_PER_SOCKET,
      maxRequestBodyBytes: e.MAX_REQUEST_BODY_BYTES,
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
      introspectionEnabled: e.INTROSPECTION_ENABLED ?? e.NODE_ENV !== 'production',
      corsOrigins: e.CORS_ORIGINS ?? (e.NODE_ENV === 'production' ? [] : 'localhost'),
      corsCredentials: e.CORS_CREDENTIALS,
      metricsToken: e.METRICS_TOKEN,
      publicMetrics: e.NODE_ENV !== 'production',
      https: e.PUBLIC_URL?.startsWith('https://') ?? false,
      headersTimeoutMs: e.HTTP_HEADERS_TIMEOUT_MS,
      requestTimeoutMs: Math.max(e.HTTP_REQUEST_TIMEOUT_MS, e.HTTP_HEADERS_TIMEOUT_MS),
      maxConnections: e.HTTP_MAX_CONNECTIONS,
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
  };
}
