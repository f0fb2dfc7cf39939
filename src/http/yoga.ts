import { createYoga, type Plugin, type YogaInitialContext } from 'graphql-yoga';
import type { Logger } from 'pino';
import { bearerToken, type TokenVerifier, type Viewer } from '../auth/tokens.js';
import {
  CALLBACK_PATH_PREFIX,
  handleKieCallback,
  type KieCallbackOptions,
} from '../callbacks/kie-callback.js';
import type { Config, EdgeConfig } from '../config.js';
import {
  createContext,
  type GatewayServices,
  type GraphQLContext,
  unauthenticated,
} from '../graphql/context.js';
import { schema } from '../graphql/schema.js';
import { yogaLogger } from '../logging.js';
import type { Metrics } from '../metrics.js';
import { useOperationTelemetry } from '../telemetry/operations.js';
import type { KieSimulator } from '../upstream/simulator.js';
import type { CorsPolicy } from './cors.js';
import { useDemoRoutes } from './demo.js';
import { useValidatedDocumentCache } from './document-cache.js';
import { createGatewayMaskError } from './error-masking.js';
import { useGraphiQLPage } from './graphiql-page.js';
import { useGraphQLSSEProtocol } from './graphql-sse.js';
import { useIntrospectionDisabled } from './introspection.js';
import { useOperationLimits } from './operation-limits.js';
import { useRequestBodyLimits } from './request-body.js';
import { useRequestIdInErrors } from './request-id.js';
import { type ReadinessChecks, useHealthRoutes, useMetricsRoute, useRoute } from './routes.js';
import type { SseReservations } from './sse-reservations.js';
import { type StreamLimits, useStreamLimits } from './stream-limits.js';

export const GRAPHQL_PATH = '/graphql';
export const SIMULATOR_PATH_PREFIX = '/simulator';

export interface YogaOptions {
  services: GatewayServices;
  verifier: TokenVerifier;
  callbacks: KieCallbackOptions;
  metrics: Metrics;
  logger: Logger;
  isReady: () => Promise<ReadinessChecks>;
  simulator: KieSimulator | undefined;
  /** GraphiQL, introspection, CORS and /metrics access. */
  edge: EdgeConfig;
  cors: CorsPolicy;
  /** graphql-sse's single connection mode reservations. */
  sseReservations: SseReservations;
  /** Open-stream slots per user and token expiry, for the SSE streams yoga and graphql-sse serve. */
  streamLimits: StreamLimits;
  /** The gateway's public base URL (PUBLIC_URL, or derived from the bound port). */
  publicUrl: string;
  /** Filled into GraphiQL's headers in development mode. */
  developmentToken: string | undefined;
  /** Where the built-in simulator serves sample inputs, for GraphiQL's example. */
  samplesUrl?: string | undefined;
  limits: Pick<
    Config['limits'],
    'maxRequestBodyBytes' | 'maxUploadRequestBytes' | 'query' | 'documentCacheBytes' | 'maxUpdateBytes'
  >;
}

/** What graphql-ws hands to yoga: the socket was authenticated once, at connection_init. */
export interface SocketContext {
  viewer?: Viewer;
}

export function createGatewayYoga(options: YogaOptions) {
  const { services, verifier, simulator } = options;
  const plugins: Plugin[] = [
    ...useHealthRoutes(options.isReady),
    useMetricsRoute(options.metrics.registry, {
      token: options.edge.metricsToken,
      publicWhenNoToken: options.edge.publicMetrics,
    }),
    useRoute(
      (path) => path.startsWith(CALLBACK_PATH_PREFIX),
      (request, path) => handleKieCallback(request, path, options.callbacks),
    ),
    // graphql-sse's own protocol (single-connection mode too) at /graphql/stream, for its client library.
    useGraphQLSSEProtocol(`${GRAPHQL_PATH}/stream`, {
      verifier,
      reservations: options.sseReservations,
      logger: options.logger,
      metrics: options.metrics,
      maxBodyBytes: options.limits.maxRequestBodyBytes,
      maxUpdateBytes: options.limits.maxUpdateBytes,
    }),
    useStreamLimits(options.streamLimits),
    useOperationTelemetry(options.metrics),
    useRequestIdInErrors(),
    // Read as it arrives, chunked bodies too, and refused with 413 past the cap.
    useRequestBodyLimits({
      maxBodyBytes: options.limits.maxRequestBodyBytes,
      maxMultipartBodyBytes: options.limits.maxUploadRequestBytes,
    }),
    ...useOperationLimits(options.limits.query),
  ];
  if (!options.edge.introspectionEnabled) plugins.push(...useIntrospectionDisabled());
  if (options.edge.demoEnabled) {
    plugins.push(
      useDemoRoutes({ publicUrl: options.publicUrl, signDevelopmentToken: verifier.signDevelopmentToken }),
    );
  }
  if (options.edge.graphiqlEnabled) {
    plugins.push(
      useGraphiQLPage({
        endpoint: GRAPHQL_PATH,
        developmentToken: options.developmentToken,
        samplesUrl: options.samplesUrl,
      }),
    );
  }
  if (simulator) {
    plugins.push(
      useRoute(
        (path) => path.startsWith(`${SIMULATOR_PATH_PREFIX}/`),
        (request, path) => simulator.handle(request, path.slice(SIMULATOR_PATH_PREFIX.length)),
      ),
    );
  }

  // Last, after every plugin that adds validation rules (see document-cache.ts).
  plugins.push(useValidatedDocumentCache(options.limits.documentCacheBytes));

  return createYoga<SocketContext, GraphQLContext>({
    schema,
    // Replaced by useValidatedDocumentCache: yoga's keeps what failed, and by count, not size.
    parserAndValidationCache: false,
    // Replaced by useRequestBodyLimits, which gives uploads a cap of their own.
    maxRequestBodySize: false,
    graphqlEndpoint: GRAPHQL_PATH,
    landingPage: false,
    logging: yogaLogger(options.logger),
    maskedErrors: { maskError: createGatewayMaskError(options.logger) },
    plugins,
    // yoga's own SSE (Accept: text/event-stream on /graphql) pings every 12 s, keeping idle streams open.
    // GraphiQL is served by useGraphiQLPage (compressed, a fresh idempotency key per load).
    graphiql: false,
    cors: (request) => options.cors.optionsFor(request),
    context: async (initial: YogaInitialContext & SocketContext) => {
      if (initial.viewer) return createContext(services, initial.viewer);
      let token: string | undefined;
      try {
        token = bearerToken(initial.request?.headers.get('authorization'));
      } catch (error) {
        throw unauthenticated((error as Error).message);
      }
      if (!token) return createContext(services, null);
      try {
        return createContext(services, await verifier.verify(token));
      } catch (error) {
        throw unauthenticated((error as Error).message);
      }
    },
  });
}

export type GatewayYoga = ReturnType<typeof createGatewayYoga>;
