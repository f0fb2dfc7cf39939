import { createServer, type RequestListener, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { createTokenVerifier } from './auth/tokens.js';
import { createKieCallbackRoute } from './callbacks/callback-route.js';
import type { KieCallbackOptions } from './callbacks/kie-callback.js';
import { SeenSignatures } from './callbacks/seen-signatures.js';
import type { Config } from './config.js';
import { type DatabaseHandle, openDatabase } from './db/connection.js';
import { DeadlineExceededError, withDeadline } from './deadline.js';
import { type EventBus, InProcessEventBus } from './events/bus.js';
import { SignalDispatcher } from './events/dispatcher.js';
import { PostgresEventBus } from './events/postgres-bus.js';
import { CorsPolicy } from './http/cors.js';
import { DeadlineClock } from './http/deadline-clock.js';
import { OpenStreams } from './http/open-streams.js';
import { createOperationGate } from './http/operation-gate.js';
import { hasRoutableTarget, refuseUnroutable } from './http/request-target.js';
import { RequestTracker } from './http/request-tracker.js';
import { READINESS_DEADLINE_MS, type ReadinessChecks } from './http/routes.js';
import { createSecurityHeaders } from './http/security-headers.js';
import { SseReservations } from './http/sse-reservations.js';
import { createSseTransport } from './http/sse-transport.js';
import { attachGraphQLWebSocket } from './http/websocket.js';
import { createGatewayYoga, SIMULATOR_PATH_PREFIX } from './http/yoga.js';
import { InputMedia } from './inputs/input-media.js';
import { createLogger, safeLogger } from './logging.js';
import { createMetrics } from './metrics.js';
import { Poller } from './poller/poller.js';
import { type DrainOptions, drain, type ShutdownReport } from './shutdown.js';
import { ResultCopier } from './storage/copier.js';
import { LocalResultStore } from './storage/local-store.js';
import { createMediaRoute } from './storage/media-route.js';
import { openResultStore } from './storage/open-store.js';
import { StoredResultRepository } from './storage/repository.js';
import { createResultFetcher } from './storage/result-fetcher.js';
import { ResultLinks } from './storage/result-links.js';
import { TaskRepository } from './tasks/repository.js';
import { TaskService } from './tasks/service.js';
import { TaskUpdates } from './tasks/updates.js';
import { WatchedTasks } from './tasks/watched-tasks.js';
import { REQUEST_ID_HEADER, requestIdFrom, withRequestId } from './telemetry/request-context.js';
import { CreditBreaker } from './upstream/credit-breaker.js';
import { KieBalance } from './upstream/kie-balance.js';
import { KieClient } from './upstream/kie-client.js';
import { SlidingWindowLimiter } from './upstream/rate-limiter.js';
import { createKieSimulator, type KieSimulator } from './upstream/simulator.js';

export interface AppOptions {
  /** Use this database instead of opening one from the config; it is left open on stop. */
  database?: DatabaseHandle;
  logger?: Logger;
}

export interface RunningApp {
  /** Where this instance listens, e.g. http://127.0.0.1:4000 */
  url: string;
  /** Base URL given to kie for callbacks. */
  publicUrl: string;
  graphqlUrl: string;
  /** Present in development mode. */
  developmentToken: string | undefined;
  simulator: KieSimulator | undefined;
  service: TaskService;
  poller: Poller;
  database: DatabaseHandle;
  /**
   * A draining stop (SIGTERM): /readyz answers 503 at once, in-flight requests and kie submits finish,
   * streams and sockets close, leases are released; it never takes longer than `deadlineMs`
   * (SHUTDOWN_TIMEOUT_MS by default). Calling it again returns the same stop.
   */
  stop(options?: Partial<DrainOptions>): Promise<ShutdownReport>;
}

/** Wires everything and starts listening; `stop` undoes it in reverse. Nothing here exits the process. */
export async function startApp(config: Config, options: AppOptions = {}): Promise<RunningApp> {
  const logger = options.logger ? safeLogger(options.logger) : createLogger(config.logLevel);
  for (const warning of config.warnings) logger.warn(`configuration: ${warning}`);
  // Undone in reverse if the start fails half way; a started app stops through `drain` instead.
  const cleanup: Array<() => Promise<void> | void> = [];
  const undoStart = async () => {
    for (const step of cleanup.reverse()) await step();
    cleanup.length = 0;
  };
  let draining = false;
  try {
    const database =
      options.database ??
      (await openDatabase(
        config.databaseUrl
          ? { url: config.databaseUrl, deadlines: config.database }
          : { dataDir: config.dataDir, deadlines: config.database },
      ));
    if (!options.database) cleanup.push(() => database.close());
    await database.migrate();

    // ioredis is loaded only with REDIS_URL, like PGlite only without DATABASE_URL.
    const bus: EventBus = config.redisUrl
      ? await (await import('./events/redis-bus.js')).RedisEventBus.start(config.redisUrl, logger)
      : database.client && database.openListener
        ? await PostgresEventBus.start({
            sql: database.client,
            openListener: database.openListener,
            logger,
            heartbeatMs: config.database.listenHeartbeatMs,
          })
        : new InProcessEventBus();
    cleanup.push(() => bus.close());

    const server: Server = createServer({
      // Node's defaults cut slow headers after 60 s and slow bodies after 300 s, checked every 30 s.
      headersTimeout: config.edge.headersTimeoutMs,
      requestTimeout: config.edge.requestTimeoutMs,
      connectionsCheckingInterval: Math.min(1_000, config.edge.headersTimeoutMs),
    });
    server.maxConnections = config.edge.maxConnections;
    let serve: RequestListener | undefined;
    server.on('request', (req, res) => (serve ? serve(req, res) : answerStarting(res)));
    const requests = new RequestTracker(server);
    const listen = () =>
      new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ port: config.port, host: config.host, backlog: config.edge.listenBacklog }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    cleanup.push(
      () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        }),
    );
    // A configured port is bound once everything is wired: until then a connection is refused by the kernel,
    // which every client and load balancer retries, and costs this process nothing. Bound early, a restarted
    // instance spent its start answering "starting" to every client of a reconnect storm, and they took those
    // answers in with their retries (bench/scenarios/reconnect-storm.ts). PORT=0 is only known once bound:
    // then the port is bound first, and what lands before the handler is told to come back (answerStarting).
    const boundEarly = config.port === 0;
    if (boundEarly) await listen();
    const port = boundEarly ? (server.address() as AddressInfo).port : config.port;
    const localUrl = `http://${config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host}:${port}`;
    const publicUrl = config.publicUrl ?? `http://localhost:${port}`;

    const metrics = createMetrics();
    const simulator = config.kie.apiKey
      ? undefined
      : createKieSimulator({
          resultBaseUrl: `${publicUrl}${SIMULATOR_PATH_PREFIX}`,
          hmacKey: config.kie.webhookHmacKey,
          // The built-in simulator downloads a task's inputs as kie does, so a dead URL fails the same way.
          knobs: { stepMs: config.simulatorStepMs, checkInputUrls: true },
        });
    if (simulator) cleanup.push(() => simulator.close());

    const queryLimiter = new SlidingWindowLimiter(config.kie.maxQueriesPerSecond, 1_000);
    const kie = new KieClient({
      apiUrl: simulator ? `${localUrl}${SIMULATOR_PATH_PREFIX}` : config.kie.apiUrl,
      uploadUrl: simulator ? `${localUrl}${SIMULATOR_PATH_PREFIX}` : config.kie.uploadUrl,
      uploadTimeoutMs: config.kie.uploadTimeoutMs,
      apiKey: config.kie.apiKey ?? 'built-in-simulator',
      timeoutMs: config.kie.requestTimeoutMs,
      createTimeoutMs: config.kie.createTimeoutMs,
      connectTimeoutMs: config.kie.connectTimeoutMs,
      queryLimiter,
      logger,
      metrics,
    });
    cleanup.push(() => kie.close());
    const inputMedia = new InputMedia(config.inputs);
    cleanup.push(() => inputMedia.close());
    const resultStore = await openResultStore(config, () => publicUrl);
    if (resultStore) cleanup.push(() => resultStore.close());
    const repository = new TaskRepository(database.db, { copyResults: resultStore !== undefined });
    const storedResults = new StoredResultRepository(database.db);
    const resultLinks = new ResultLinks({
      store: resultStore,
      kie,
      logger,
      metrics,
      urlTtlS: config.storage.urlTtlS,
      kieUrlFreshS: config.storage.kieUrlFreshS,
    });
    const kieOrigins = simulator
      ? [new URL(publicUrl).origin, new URL(localUrl).origin]
      : [new URL(config.kie.apiUrl).origin];
    const resultDownloads = resultStore ? createResultFetcher(config, kieOrigins) : undefined;
    if (resultDownloads) cleanup.push(() => resultDownloads.close());
    const copier =
      resultStore && resultDownloads
        ? new ResultCopier({
            repository: storedResults,
            store: resultStore,
            kie,
            fetcher: resultDownloads,
            logger,
            metrics,
            settings: config.storage,
            intervalMs: config.storage.copyIntervalMs,
            leaseMs: config.poller.leaseMs,
            tickTimeoutMs: config.poller.tickTimeoutMs,
          })
        : undefined;
    const submitLeaseMs = config.poller.leaseMs;
    const creditBreaker = new CreditBreaker(config.kie.creditsCooldownMs, logger, (paused) =>
      metrics.createsPaused.set(paused ? 1 : 0),
    );
    const kieBalance = new KieBalance({
      kie,
      ttlMs: config.kie.creditsCacheMs,
      timeoutMs: config.kie.requestTimeoutMs,
      lowCreditsThreshold: config.kie.lowCreditsThreshold,
      logger,
      metrics,
    });
    const service = new TaskService({
      repository,
      bus,
      kie,
      media: inputMedia,
      creditBreaker,
      createWindow: { maxCreates: config.kie.maxCreatesPer10s, windowMs: 10_000 },
      quota: {
        maxActiveTasks: config.quotas.maxActiveTasksPerUser,
        maxCreatesPerHour: config.quotas.maxCreatesPerUserPerHour,
      },
      logger,
      metrics,
      publicUrl: () => publicUrl,
      minPollDelayMs: config.poller.minDelayMs,
      taskTimeoutMs: config.poller.taskTimeoutMs,
      submitGraceMs: config.poller.submitGraceMs,
      submitLeaseMs,
      maxPendingSubmits: config.poller.maxPendingSubmits,
    });
    const watched = new WatchedTasks(repository, {
      leaseMs: config.poller.watchedLeaseMs,
      pollIntervalMs: config.poller.watchedIntervalMs,
      logger,
    });
    cleanup.push(() => watched.stop());
    const updates = new TaskUpdates(repository, new SignalDispatcher(bus), metrics.activeSubscriptions, {
      replayPageSize: config.sinceReplayPageSize,
      watched,
      storedResults: (taskIds) => storedResults.listForTasks(taskIds),
    });
    const verifier = await createTokenVerifier(config.auth, config.dataDir, config.tokenPolicy);
    const developmentToken = await verifier.signDevelopmentToken?.('developer');

    // One count of open streams per user over graphql-ws and every SSE transport (MAX_SOCKETS_PER_USER).
    const streamLimits = {
      openStreams: new OpenStreams(config.limits.maxSocketsPerUser),
      clock: new DeadlineClock(),
    };
    cleanup.push(() => streamLimits.clock.stop());

    const poller = new Poller({
      service,
      repository,
      kie,
      logger,
      intervalMs: config.poller.intervalMs,
      minDelayMs: config.poller.minDelayMs,
      maxDelayMs: config.poller.maxDelayMs,
      taskTimeoutMs: config.poller.taskTimeoutMs,
      submitGraceMs: config.poller.submitGraceMs,
      maxQueriesPerSecond: config.kie.maxQueriesPerSecond,
      leaseMs: config.poller.leaseMs,
      tickTimeoutMs: config.poller.tickTimeoutMs,
      workTimeoutMs: config.poller.workTimeoutMs,
      watchedPollIntervalMs: config.poller.watchedIntervalMs,
    });
    const cors = new CorsPolicy(config.edge.corsOrigins, config.edge.corsCredentials);
    const callbacks: KieCallbackOptions = {
      service,
      hmacKey: config.kie.webhookHmacKey,
      seenSignatures: new SeenSignatures(database.db, repository, logger),
      confirmCallbacks: config.kie.confirmCallbacks,
      logger,
      metrics,
    };
    const yoga = createGatewayYoga({
      services: {
        tasks: service,
        repository,
        updates,
        storedResults,
        resultLinks,
        kieAccount: { balance: kieBalance, creditBreaker },
      },
      verifier,
      callbacks,
      metrics,
      logger,
      // Not ready while any of the three is unwell: a ready gateway must be able to store, hear and poll.
      isReady: async (): Promise<ReadinessChecks> => {
        // A draining instance takes no new work: load balancers stop sending it any at once.
        if (draining) return { accepting: false };
        return {
          database: await withDeadline(
            database.ping(),
            READINESS_DEADLINE_MS,
            () => new DeadlineExceededError('database ping timed out'),
          ).then(
            () => true,
            () => false,
          ),
          listener: bus.healthy(),
          poller: poller.healthy(),
        };
      },
      simulator,
      publicUrl,
      developmentToken,
      samplesUrl: simulator ? `${publicUrl}${SIMULATOR_PATH_PREFIX}/samples` : undefined,
      streamLimits,
      edge: config.edge,
      cors,
      sseReservations: new SseReservations(config.sseReservations, streamLimits.clock),
      limits: config.limits,
    });
    const gate = createOperationGate(yoga, logger, metrics);
    const { maxRequestBodyBytes, maxUpdateBytes, maxBufferedBytes } = config.limits;
    // SSE on /graphql has a lean transport of its own; everything else is yoga's.
    const sse = createSseTransport({
      yoga,
      gate,
      verifier,
      logger,
      limits: streamLimits,
      cors,
      maxBodyBytes: maxRequestBodyBytes,
      maxUpdateBytes,
      maxBufferedBytes,
    });
    const securityHeaders = createSecurityHeaders({ https: config.edge.https });
    // The folder's copies are served by node's own request and response: `send` streams the file with ranges.
    const media = resultStore instanceof LocalResultStore ? createMediaRoute(resultStore) : undefined;
    // kie's callbacks too: what yoga would add to them is the live updates' event loop time.
    const callbackRoute = createKieCallbackRoute(callbacks);
    serve = (req, res) => {
      const requestId = requestIdFrom(req.headers[REQUEST_ID_HEADER]);
      const setCommonHeaders = () => {
        res.setHeader(REQUEST_ID_HEADER, requestId);
        securityHeaders.setOn(res);
      };
      if (!hasRoutableTarget(req)) {
        setCommonHeaders();
        return refuseUnroutable(res);
      }
      // Everything this request does, logs and errors included, knows its id (request-context.ts).
      return withRequestId(requestId, () => {
        // The lean SSE transport writes these with the rest of its headers (see its serve()).
        if (sse.handles(req)) {
          return void sse.serve(req, res, [[REQUEST_ID_HEADER, requestId], ...securityHeaders.entries]);
        }
        setCommonHeaders();
        if (media?.handles(req)) return media.serve(req, res);
        if (callbackRoute.handles(req)) return void callbackRoute.serve(req, res);
        return yoga(req, res);
      });
    };
    cleanup.push(() => sse.close());
    const sockets = attachGraphQLWebSocket({
      server,
      gate,
      verifier,
      logger,
      openStreams: streamLimits.openStreams,
      maxSubscriptionsPerSocket: config.limits.maxSubscriptionsPerSocket,
      limits: config.webSocket,
      maxUpdateBytes,
      maxBufferedBytes,
      cors,
    });
    cleanup.push(() => sockets.close());

    if (!boundEarly) await listen();
    poller.start();
    cleanup.push(() => poller.stop());
    if (copier) {
      service.onSettled((task) => {
        if (task.state === 'SUCCEEDED') copier.wake();
      });
    }
    copier?.start();
    if (copier) cleanup.push(() => copier.stop());
    kieBalance.start();
    cleanup.push(() => kieBalance.stop());

    let stopping: Promise<ShutdownReport> | undefined;
    const stop = (drainOptions: Partial<DrainOptions> = {}) => {
      draining = true;
      stopping ??= drain(
        {
          server,
          requests,
          endSseStreams: () => sse.close(),
          stopPoller: () => poller.stop(),
          releasePollerLeases: () => poller.releaseLeases(),
          submitsSettled: () => service.settled(),
          closeSockets: () => sockets.close(),
          pingDatabase: () => database.ping(),
          release: [
            ...(copier ? [{ name: 'result copier', run: () => copier.stop() }] : []),
            ...(resultDownloads ? [{ name: 'result downloads', run: () => resultDownloads.close() }] : []),
            { name: 'stream deadlines', run: () => streamLimits.clock.stop() },
            { name: 'watched tasks', run: () => watched.stop() },
            { name: 'kie balance', run: () => kieBalance.stop() },
            { name: 'kie client', run: () => kie.close() },
            ...(resultStore ? [{ name: 'result store', run: () => resultStore.close() }] : []),
            { name: 'input checks', run: () => inputMedia.close() },
            ...(simulator ? [{ name: 'simulator', run: () => simulator.close() }] : []),
            { name: 'event bus', run: () => bus.close() },
            ...(options.database ? [] : [{ name: 'database', run: () => database.close() }]),
          ],
        },
        { deadlineMs: config.shutdownTimeoutMs, ...drainOptions },
        logger,
      );
      return stopping;
    };

    return {
      url: localUrl,
      publicUrl,
      graphqlUrl: `${localUrl}/graphql`,
      developmentToken,
      simulator,
      service,
      poller,
      database,
      stop,
    };
  } catch (error) {
    await undoStart();
    throw error;
  }
}

/** A request that came before the gateway was wired: 503, try again in a second. */
function answerStarting(res: ServerResponse): void {
  res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' });
  res.end(JSON.stringify({ status: 'starting' }));
}
