import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';

const SECRET = 'a-test-secret-that-is-at-least-32-characters-long';

/** Calls loadConfig and returns the ConfigError it throws, failing when it throws anything else or nothing. */
function configError(env: Record<string, string | undefined>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

describe('loadConfig', () => {
  it('uses the defaults API.md documents when nothing is set', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      nodeEnv: 'development',
      port: 4000,
      host: '0.0.0.0',
      publicUrl: undefined,
      databaseUrl: undefined,
      dataDir: '.data',
      kie: {
        apiKey: undefined,
        apiUrl: 'https://api.kie.ai',
        uploadUrl: 'https://kieai.redpandaai.co',
        webhookHmacKey: undefined,
        maxCreatesPer10s: 20,
        maxQueriesPerSecond: 10,
      },
      auth: { mode: 'development' },
      poller: { intervalMs: 1000, minDelayMs: 30_000, maxDelayMs: 300_000, taskTimeoutMs: 1_800_000 },
      redisUrl: undefined,
      simulatorStepMs: 3000,
      logLevel: 'info',
      limits: {
        maxSocketsPerUser: 100,
        maxSubscriptionsPerSocket: 50,
        maxRequestBodyBytes: 102_400,
        query: { maxTokens: 2000, maxAliases: 30, maxDepth: 12, maxDirectives: 20, maxCost: 25_000 },
        documentCacheBytes: 16 * 1024 * 1024,
        maxUpdateBytes: 256 * 1024,
        maxBufferedBytes: 1024 * 1024,
      },
      quotas: { maxActiveTasksPerUser: 20, maxCreatesPerUserPerHour: 200 },
    });
  });

  it('confirms success callbacks by default only without an HMAC key, unless CONFIRM_CALLBACKS says', () => {
    expect(loadConfig({}).kie.confirmCallbacks).toBe(true);
    expect(loadConfig({ KIE_WEBHOOK_HMAC_KEY: 'k' }).kie.confirmCallbacks).toBe(false);
    expect(loadConfig({ KIE_WEBHOOK_HMAC_KEY: 'k', CONFIRM_CALLBACKS: 'true' }).kie.confirmCallbacks).toBe(
      true,
    );
    expect(loadConfig({ CONFIRM_CALLBACKS: 'false' }).kie.confirmCallbacks).toBe(false);
    expect(() => loadConfig({ CONFIRM_CALLBACKS: 'yes' })).toThrow(
      'Invalid configuration: CONFIRM_CALLBACKS must be true or false',
    );
  });

  it('reads the per-user quotas, and refuses a zero cap with the variable named', () => {
    const config = loadConfig({ MAX_ACTIVE_TASKS_PER_USER: '3', MAX_CREATES_PER_USER_PER_HOUR: '7' });
    expect(config.quotas).toEqual({ maxActiveTasksPerUser: 3, maxCreatesPerUserPerHour: 7 });
    expect(() => loadConfig({ MAX_ACTIVE_TASKS_PER_USER: '0' })).toThrow(
      'Invalid configuration: MAX_ACTIVE_TASKS_PER_USER must be at least 1',
    );
    expect(() => loadConfig({ MAX_CREATES_PER_USER_PER_HOUR: 'lots' })).toThrow(
      'Invalid configuration: MAX_CREATES_PER_USER_PER_HOUR must be a whole number',
    );
  });

  it('reads every documented variable', () => {
    const config = loadConfig({
      NODE_ENV: 'production',
      PORT: '8080',
      HOST: '127.0.0.1',
      PUBLIC_URL: 'https://gateway.example.com/',
      DATABASE_URL: 'postgres://u:p@db:5432/avatars',
      DATA_DIR: '/var/lib/avatar',
      KIE_API_KEY: 'kie-key',
      KIE_API_URL: 'https://kie.example.com/',
      KIE_UPLOAD_URL: 'https://upload.example.com',
      KIE_WEBHOOK_HMAC_KEY: 'hmac',
      AUTH_JWKS_URL: 'https://id.example.com/.well-known/jwks.json',
      AUTH_JWT_ISSUER: 'https://id.example.com/',
      AUTH_JWT_AUDIENCE: 'avatar-gateway',
      POLL_INTERVAL_MS: '500',
      POLL_MIN_DELAY_MS: '10000',
      POLL_MAX_DELAY_MS: '60000',
      TASK_TIMEOUT_MS: '900000',
      KIE_MAX_CREATES_PER_10S: '40',
      KIE_MAX_QUERIES_PER_S: '5',
      REDIS_URL: 'redis://cache:6379',
      SIMULATOR_STEP_MS: '100',
      LOG_LEVEL: 'warn',
    });
    expect(config).toMatchObject({
      nodeEnv: 'production',
      port: 8080,
      host: '127.0.0.1',
      // A trailing slash would double up in the callback URL.
      publicUrl: 'https://gateway.example.com',
      databaseUrl: 'postgres://u:p@db:5432/avatars',
      dataDir: '/var/lib/avatar',
      kie: {
        apiKey: 'kie-key',
        apiUrl: 'https://kie.example.com',
        uploadUrl: 'https://upload.example.com',
        webhookHmacKey: 'hmac',
        maxCreatesPer10s: 40,
        maxQueriesPerSecond: 5,
      },
      auth: {
        mode: 'jwks',
        jwksUrl: 'https://id.example.com/.well-known/jwks.json',
        issuer: 'https://id.example.com/',
        audience: 'avatar-gateway',
      },
      poller: { intervalMs: 500, minDelayMs: 10_000, maxDelayMs: 60_000, taskTimeoutMs: 900_000 },
      redisUrl: 'redis://cache:6379',
      simulatorStepMs: 100,
      logLevel: 'warn',
    });
  });

  it('treats empty values as unset, as docker compose passes an unset VAR through', () => {
    const config = loadConfig({ PORT: '', AUTH_JWT_SECRET: '', KIE_API_KEY: '', DATABASE_URL: '' });
    expect(config.port).toBe(4000);
    expect(config.auth.mode).toBe('development');
    expect(config.kie.apiKey).toBeUndefined();
    expect(config.databaseUrl).toBeUndefined();
  });

  it('uses an HS256 secret when AUTH_JWT_SECRET is set', () => {
    expect(loadConfig({ AUTH_JWT_SECRET: SECRET }).auth).toEqual({
      mode: 'secret',
      secret: SECRET,
      issuer: undefined,
      audience: undefined,
    });
  });

  it.each([
    ['PORT', 'abc'],
    ['PORT', '70000'],
    ['PORT', '-1'],
    ['NODE_ENV', 'staging'],
    ['PUBLIC_URL', 'ftp://gateway.example.com'],
    ['PUBLIC_URL', 'not a url'],
    ['DATABASE_URL', 'mysql://db/avatars'],
    ['KIE_API_URL', 'api.kie.ai'],
    ['KIE_UPLOAD_URL', 'file:///tmp'],
    ['AUTH_JWT_SECRET', 'too-short'],
    ['AUTH_JWKS_URL', 'jwks'],
    ['POLL_INTERVAL_MS', '5'],
    ['POLL_INTERVAL_MS', '1.5'],
    ['POLL_MIN_DELAY_MS', '-100'],
    ['POLL_MAX_DELAY_MS', '0'],
    ['WATCHED_POLL_INTERVAL_MS', '50'],
    ['TASK_TIMEOUT_MS', 'soon'],
    ['KIE_MAX_CREATES_PER_10S', '0'],
    ['KIE_MAX_QUERIES_PER_S', 'ten'],
    ['REDIS_URL', 'http://cache:6379'],
    ['SIMULATOR_STEP_MS', '0'],
    ['LOG_LEVEL', 'loud'],
  ])('refuses %s=%s with one line naming the variable', (variable, value) => {
    const error = configError({ [variable]: value });
    expect(error.message).toContain(variable);
    expect(error.message).not.toContain('\n');
    // The value's problem is said, not just that there is one.
    expect(error.message.length).toBeGreaterThan(variable.length + 25);
  });

  it('gives every database and poller wait a deadline, each from its variable', () => {
    expect(loadConfig({})).toMatchObject({
      database: {
        connectTimeoutMs: 4_000,
        statementTimeoutMs: 4_000,
        idleTimeoutMs: 60_000,
        keepAliveMs: 10_000,
        listenHeartbeatMs: 5_000,
      },
      poller: { tickTimeoutMs: 10_000, workTimeoutMs: 60_000, watchedIntervalMs: 1_500 },
    });
    const config = loadConfig({
      DB_CONNECT_TIMEOUT_MS: '1500',
      DB_STATEMENT_TIMEOUT_MS: '2500',
      DB_IDLE_TIMEOUT_MS: '30000',
      DB_KEEPALIVE_MS: '5000',
      DB_LISTEN_HEARTBEAT_MS: '1000',
      POLL_TICK_TIMEOUT_MS: '3000',
      POLL_WORK_TIMEOUT_MS: '9000',
      WATCHED_POLL_INTERVAL_MS: '2500',
    });
    expect(config.database).toEqual({
      connectTimeoutMs: 1_500,
      statementTimeoutMs: 2_500,
      idleTimeoutMs: 30_000,
      keepAliveMs: 5_000,
      listenHeartbeatMs: 1_000,
    });
    expect(config.poller).toMatchObject({
      tickTimeoutMs: 3_000,
      workTimeoutMs: 9_000,
      watchedIntervalMs: 2_500,
    });
    expect(configError({ DB_STATEMENT_TIMEOUT_MS: '0' }).message).toContain('DB_STATEMENT_TIMEOUT_MS');
  });

  it('reports every bad value at once, each with its own reason, on one line', () => {
    const error = configError({
      POLL_MIN_DELAY_MS: '-5',
      PORT: 'eighty',
      LOG_LEVEL: 'loud',
      KIE_CONNECT_TIMEOUT_MS: '100000',
      AUTH_JWT_SECRET: 'short',
    });
    expect(error.message).not.toContain('\n');
    expect(error.message).toContain('POLL_MIN_DELAY_MS must be at least 0');
    expect(error.message).toContain('PORT must be a whole number');
    expect(error.message).toMatch(/LOG_LEVEL [^;]*debug/);
    expect(error.message).toContain('KIE_CONNECT_TIMEOUT_MS must be less than KIE_CREATE_TIMEOUT_MS');
    expect(error.message).toContain('AUTH_JWT_SECRET must be at least 32 characters');
    expect(error.message.match(/;/g)).toHaveLength(4);
  });

  it.each([
    ['-5', 'must be at least 0'],
    ['1.5', 'must be a whole number'],
    ['1e3', 'must be a whole number'],
    ['99999999999999999999', 'must be at most'],
  ])('tells POLL_MIN_DELAY_MS=%s that it %s', (value, reason) => {
    expect(configError({ POLL_MIN_DELAY_MS: value }).message).toContain(`POLL_MIN_DELAY_MS ${reason}`);
  });

  it('refuses a maximum poll delay below the minimum', () => {
    const error = configError({ POLL_MIN_DELAY_MS: '5000', POLL_MAX_DELAY_MS: '1000' });
    expect(error.message).toMatch(/POLL_MAX_DELAY_MS/);
    expect(error.message).not.toContain('\n');
  });

  it('refuses both an HS256 secret and a JWKS URL', () => {
    const error = configError({ AUTH_JWT_SECRET: SECRET, AUTH_JWKS_URL: 'https://id.example.com/jwks' });
    expect(error.message).toMatch(/AUTH_JWT_SECRET/);
    expect(error.message).toMatch(/AUTH_JWKS_URL/);
  });

  describe('in production', () => {
    it('refuses development tokens and names the auth variables', () => {
      const error = configError({ NODE_ENV: 'production', KIE_API_KEY: 'kie-key' });
      expect(error.message).toMatch(/AUTH_JWT_SECRET|AUTH_JWKS_URL/);
      expect(error.message).not.toContain('\n');
    });

    it('refuses the built-in simulator and names KIE_API_KEY', () => {
      const error = configError({ NODE_ENV: 'production', AUTH_JWT_SECRET: SECRET });
      expect(error.message).toContain('KIE_API_KEY');
      expect(error.message).not.toContain('\n');
    });

    it('names every missing variable at once', () => {
      const error = configError({ NODE_ENV: 'production' });
      expect(error.message).toContain('KIE_API_KEY');
      expect(error.message).toMatch(/AUTH_JWT_SECRET or AUTH_JWKS_URL/);
    });

    it('refuses REDIS_URL on an embedded PGlite, which several instances cannot share', () => {
      const production = { NODE_ENV: 'production', AUTH_JWT_SECRET: SECRET, KIE_API_KEY: 'kie-key' };
      expect(configError({ ...production, REDIS_URL: 'redis://cache:6379' }).message).toMatch(
        /REDIS_URL.*DATABASE_URL/,
      );
      expect(
        loadConfig({ ...production, REDIS_URL: 'redis://cache:6379', DATABASE_URL: 'postgres://db/x' })
          .redisUrl,
      ).toBe('redis://cache:6379');
    });

    it('warns of PGlite, a local PUBLIC_URL, GraphiQL, introspection and a hidden /metrics', () => {
      const production = { NODE_ENV: 'production', AUTH_JWT_SECRET: SECRET, KIE_API_KEY: 'kie-key' };
      const warned = (env: Record<string, string>) => loadConfig({ ...production, ...env }).warnings;
      const all = warned({
        PUBLIC_URL: 'http://127.0.0.1:4000',
        GRAPHIQL_ENABLED: 'true',
        INTROSPECTION_ENABLED: 'true',
      });
      expect(all.map((warning) => warning.split(' ')[0])).toEqual([
        'DATABASE_URL',
        'PUBLIC_URL',
        'GRAPHIQL_ENABLED',
        'INTROSPECTION_ENABLED',
        'METRICS_TOKEN',
      ]);
      expect(all[1]).toContain('127.0.0.1');
      expect(warned({})[1]).toMatch(/^PUBLIC_URL is not set/);
      expect(warned({ PUBLIC_URL: 'http://app.localhost' }).some((w) => w.startsWith('PUBLIC_URL'))).toBe(
        true,
      );
      expect(
        warned({
          DATABASE_URL: 'postgres://db/avatars',
          PUBLIC_URL: 'https://gateway.example.com',
          METRICS_TOKEN: 'a-metrics-token-of-16+',
        }),
      ).toEqual([]);
      // Outside production the same settings are the intended development defaults.
      expect(loadConfig({ GRAPHIQL_ENABLED: 'true' }).warnings).toEqual([]);
    });

    it('starts with auth and a kie key', () => {
      const config = loadConfig({ NODE_ENV: 'production', AUTH_JWT_SECRET: SECRET, KIE_API_KEY: 'kie-key' });
      expect(config.nodeEnv).toBe('production');
      expect(config.auth.mode).toBe('secret');
      expect(config.kie.apiKey).toBe('kie-key');
    });
  });

  it('never puts a secret into an error message', () => {
    const error = configError({ KIE_API_KEY: 'kie-secret-value', AUTH_JWT_SECRET: 'short-secret-value' });
    expect(error.message).not.toContain('short-secret-value');
    expect(error.message).not.toContain('kie-secret-value');
  });
});

describe('the production edge', () => {
  const production = { NODE_ENV: 'production', AUTH_JWT_SECRET: SECRET, KIE_API_KEY: 'kie-key' };

  it('turns GraphiQL, introspection, public /metrics and CORS off in production, on elsewhere', () => {
    expect(loadConfig(production).edge).toMatchObject({
      graphiqlEnabled: false,
      demoEnabled: false,
      introspectionEnabled: false,
      corsOrigins: [],
      corsCredentials: false,
      metricsToken: undefined,
      publicMetrics: false,
      https: false,
      headersTimeoutMs: 10_000,
      requestTimeoutMs: 30_000,
      maxConnections: 20_000,
      listenBacklog: 4_096,
    });
    expect(loadConfig({}).edge).toMatchObject({
      graphiqlEnabled: true,
      demoEnabled: true,
      introspectionEnabled: true,
      corsOrigins: 'localhost',
      publicMetrics: true,
    });
  });

  it('reads the edge variables', () => {
    const config = loadConfig({
      ...production,
      GRAPHIQL_ENABLED: 'true',
      INTROSPECTION_ENABLED: '1',
      DEMO_ENABLED: 'true',
      CORS_ORIGINS: 'https://app.example.com, http://localhost:3000',
      CORS_CREDENTIALS: 'true',
      METRICS_TOKEN: 'a-metrics-token-of-16+',
      PUBLIC_URL: 'https://gateway.example.com',
      HTTP_HEADERS_TIMEOUT_MS: '5000',
      HTTP_REQUEST_TIMEOUT_MS: '15000',
      HTTP_MAX_CONNECTIONS: '100',
      HTTP_LISTEN_BACKLOG: '64',
    });
    expect(config.edge).toEqual({
      graphiqlEnabled: true,
      demoEnabled: true,
      introspectionEnabled: true,
      corsOrigins: ['https://app.example.com', 'http://localhost:3000'],
      corsCredentials: true,
      metricsToken: 'a-metrics-token-of-16+',
      publicMetrics: false,
      https: true,
      headersTimeoutMs: 5_000,
      requestTimeoutMs: 15_000,
      maxConnections: 100,
      listenBacklog: 64,
    });
  });

  it.each([
    ['CORS_ORIGINS', '*'],
    ['CORS_ORIGINS', 'https://app.example.com/path'],
    ['GRAPHIQL_ENABLED', 'yes'],
    ['DEMO_ENABLED', 'maybe'],
    ['METRICS_TOKEN', 'short'],
  ])('refuses %s=%s', (variable, value) => {
    expect(() => loadConfig({ [variable]: value })).toThrow(variable);
  });

  it('pages since replays by 100 tasks unless SINCE_REPLAY_PAGE_SIZE says', () => {
    expect(loadConfig({}).sinceReplayPageSize).toBe(100);
    expect(loadConfig({ SINCE_REPLAY_PAGE_SIZE: '20' }).sinceReplayPageSize).toBe(20);
  });

  it('expires unused graphql-sse reservations after 10 s and caps them at 5 per user by default', () => {
    expect(loadConfig({}).sseReservations).toEqual({ ttlMs: 10_000, maxPerUser: 5 });
    const config = loadConfig({ SSE_RESERVATION_TTL_MS: '2000', SSE_MAX_RESERVATIONS_PER_USER: '1' });
    expect(config.sseReservations).toEqual({ ttlMs: 2_000, maxPerUser: 1 });
  });

  it('bounds graphql-ws messages by default and reads WS_MAX_*', () => {
    expect(loadConfig({}).webSocket).toEqual({
      maxPayloadBytes: 65_536,
      maxInitPayloadBytes: 8_192,
      maxFragments: 16,
      maxBufferedChunks: 1_024,
    });
    const config = loadConfig({
      WS_MAX_PAYLOAD_BYTES: '4096',
      WS_MAX_INIT_PAYLOAD_BYTES: '8192',
      WS_MAX_FRAGMENTS: '4',
      WS_MAX_BUFFERED_CHUNKS: '64',
    });
    // The first message is a message: it is never allowed more than any other.
    expect(config.webSocket).toEqual({
      maxPayloadBytes: 4096,
      maxInitPayloadBytes: 4096,
      maxFragments: 4,
      maxBufferedChunks: 64,
    });
  });

  it('caps token lifetimes at a day in production and 31 days elsewhere, unless AUTH_MAX_TOKEN_LIFETIME_S says', () => {
    expect(loadConfig(production).tokenPolicy.maxLifetimeS).toBe(86_400);
    expect(loadConfig({}).tokenPolicy.maxLifetimeS).toBe(31 * 86_400);
    expect(loadConfig({ ...production, AUTH_MAX_TOKEN_LIFETIME_S: '600' }).tokenPolicy.maxLifetimeS).toBe(
      600,
    );
  });
});

describe('result storage', () => {
  it('copies results into DATA_DIR/results by default, with its limits', () => {
    expect(loadConfig({ DATA_DIR: '/srv/data' }).storage).toEqual({
      backend: { kind: 'local', directory: '/srv/data/results' },
      signingKey: undefined,
      urlTtlS: 3_600,
      retentionS: 30 * 86_400,
      maxBytes: 500 * 1024 * 1024,
      copyTimeoutMs: 300_000,
      copyAttempts: 20,
      retryMs: 5_000,
      retryMaxMs: 1_800_000,
      concurrency: 2,
      copyIntervalMs: 5_000,
      kieUrlFreshS: 3_600,
    });
  });

  it('reads every storage variable', () => {
    const storage = loadConfig({
      RESULT_STORAGE_DIR: '/mnt/videos',
      RESULT_URL_SIGNING_KEY: SECRET,
      RESULT_URL_TTL_S: '600',
      RESULT_RETENTION_S: '86400',
      RESULT_MAX_BYTES: '1000',
      RESULT_COPY_TIMEOUT_MS: '1000',
      RESULT_COPY_ATTEMPTS: '3',
      RESULT_COPY_RETRY_MS: '100',
      RESULT_COPY_RETRY_MAX_MS: '1000',
      RESULT_COPY_CONCURRENCY: '4',
      RESULT_COPY_INTERVAL_MS: '100',
      KIE_RESULT_URL_FRESH_S: '0',
    }).storage;
    expect(storage).toMatchObject({
      backend: { kind: 'local', directory: '/mnt/videos' },
      signingKey: SECRET,
      urlTtlS: 600,
      retentionS: 86_400,
      maxBytes: 1000,
      copyTimeoutMs: 1000,
      copyAttempts: 3,
      retryMs: 100,
      retryMaxMs: 1000,
      concurrency: 4,
      copyIntervalMs: 100,
      kieUrlFreshS: 0,
    });
    expect(loadConfig({ RESULT_STORAGE: 'none' }).storage.backend).toEqual({ kind: 'none' });
  });

  it('uses S3 when a bucket is named', () => {
    expect(
      loadConfig({
        S3_BUCKET: 'videos',
        S3_REGION: 'eu-west-1',
        S3_ENDPOINT: 'http://minio:9000',
        S3_PUBLIC_ENDPOINT: 'http://localhost:9000',
        S3_FORCE_PATH_STYLE: 'true',
        S3_ACCESS_KEY_ID: 'key',
        S3_SECRET_ACCESS_KEY: 'secret',
        S3_PREFIX: 'avatars/',
      }).storage.backend,
    ).toEqual({
      kind: 's3',
      bucket: 'videos',
      region: 'eu-west-1',
      endpoint: 'http://minio:9000',
      publicEndpoint: 'http://localhost:9000',
      forcePathStyle: true,
      credentials: { accessKeyId: 'key', secretAccessKey: 'secret' },
      prefix: 'avatars/',
    });
  });

  it('refuses storage settings that cannot work, naming the variable', () => {
    expect(configError({ RESULT_STORAGE: 's3' }).message).toContain('S3_BUCKET');
    expect(configError({ S3_BUCKET: 'videos', S3_ACCESS_KEY_ID: 'key' }).message).toContain(
      'S3_SECRET_ACCESS_KEY',
    );
    expect(configError({ RESULT_STORAGE: 'disk' }).message).toContain('RESULT_STORAGE');
    expect(configError({ RESULT_URL_TTL_S: '700000' }).message).toContain('RESULT_URL_TTL_S');
    expect(configError({ RESULT_URL_SIGNING_KEY: 'short' }).message).toContain('RESULT_URL_SIGNING_KEY');
  });
});
