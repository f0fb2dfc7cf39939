import type { Server } from 'node:http';
import { type ExecutionArgs, type ExecutionResult, GraphQLError } from 'graphql';
import { type Context, MessageType, makeServer } from 'graphql-ws';
import type { Logger } from 'pino';
import { WebSocketServer } from 'ws';
import { bearerToken, type TokenVerifier, type Viewer } from '../auth/tokens.js';
import type { WebSocketLimits } from '../config.js';
import type { CorsPolicy } from './cors.js';
import { unavailableError } from './error-masking.js';
import { subscribe as subscribeExecuted } from './executed-stream.js';
import type { OpenStreams } from './open-streams.js';
import type { OperationGate } from './operation-gate.js';
import { type SubscriptionContextHolder, sharedSubscriptionContext } from './socket-context.js';
import { SocketSweeper } from './socket-sweeper.js';
import { type OperationHooks, runOperation } from './ws-operations.js';
import { type SocketExtra, serveGraphQLOverWebSocket } from './ws-transport.js';
import { GRAPHQL_PATH } from './yoga.js';

export const CLOSE_FORBIDDEN = 4403;
export const CLOSE_TOO_MANY_SOCKETS = 4429;

export interface WebSocketOptions {
  server: Server;
  gate: OperationGate;
  verifier: TokenVerifier;
  logger: Logger;
  /** A socket takes one of its user's open-stream slots (MAX_SOCKETS_PER_USER), shared with SSE streams. */
  openStreams: OpenStreams;
  maxSubscriptionsPerSocket: number;
  limits: WebSocketLimits;
  /** One message serialised larger than this closes the socket with 4413. */
  maxUpdateBytes: number;
  /** A socket whose reader leaves more than this unread is closed with 4420. */
  maxBufferedBytes: number;
  /** An upgrade from a browser origin that may not call the gateway is refused with 403. */
  cors: CorsPolicy;
  /** Every socket is pinged this often; one that stops answering is dropped. */
  keepAliveMs?: number;
}

type Extra = SocketExtra &
  SubscriptionContextHolder & {
    viewer?: Viewer;
    /** graphql-ws's context of this socket, once it is acknowledged: what ws-operations.ts runs with. */
    protocol?: Context<Record<string, unknown>, Extra>;
  };

/** graphql-ws's own default for the wait for connection_init. */
const INIT_TIMEOUT_MS = 3_000;

/**
 * graphql-ws on the same server and path as yoga. Parsing, validation and context go through the operation
 * gate (yoga's envelope), so every transport shares caches, limits, plugins, context and auth; queries and mutations execute
 * through it too, subscriptions on graphql-js with yoga's error masking (see `subscribe`). The token is
 * checked once at connection_init; the socket closes when the token expires.
 */
export function attachGraphQLWebSocket(options: WebSocketOptions) {
  const { gate, verifier, logger } = options;
  const { openStreams } = options;
  const wss = new WebSocketServer({
    server: options.server,
    path: GRAPHQL_PATH,
    // ws's defaults (100 MiB messages, 16,384 fragments, 262,144 buffered chunks) let one socket pin
    // megabytes: a fragment or a chunk costs a Buffer even when it carries one byte or none.
    maxPayload: options.limits.maxPayloadBytes,
    maxFragments: options.limits.maxFragments,
    maxBufferedChunks: options.limits.maxBufferedChunks,
    // A WebSocket is not subject to CORS: the browser sends Origin and leaves the decision to the server.
    verifyClient: ({ origin, req }, accept) =>
      options.cors.allowsUpgrade(origin || undefined, req.headers.host)
        ? accept(true)
        : accept(false, 403, 'Origin not allowed'),
  });
  const sweeper = new SocketSweeper({ keepAliveMs: options.keepAliveMs ?? 12_000 });

  const release = (viewer: Viewer | undefined) => {
    if (viewer) openStreams.close(viewer.id);
  };

  const hooks: OperationHooks<Extra> = {
    mask: gate.mask,
    prepare: async (ctx, _id, params) => {
      // The operation's slot in ctx.subscriptions is reserved already.
      if (Object.keys(ctx.subscriptions).length > options.maxSubscriptionsPerSocket) {
        return [
          new GraphQLError(`At most ${options.maxSubscriptionsPerSocket} operations per socket`, {
            extensions: { code: 'TOO_MANY_SUBSCRIPTIONS' },
          }),
        ];
      }
      // Only what the context needs: it lives as long as the subscription does.
      const admission = gate.admit(params, { viewer: ctx.extra.viewer, transport: 'graphql-ws' });
      if (!admission.admitted) return [...admission.errors];
      // The subscribe message is let go once the operation starts; what executes is the parsed document,
      // shared by every operation with the same text.
      const { document, operation } = admission;
      const { schema, execute, contextFactory } = admission.envelope;
      const subscription = operation === 'subscription';
      return {
        schema,
        operationName: params.operationName,
        document,
        variableValues: params.variables,
        // Queries and mutations go through the envelope's plugins, which may keep per-operation state in it.
        contextValue: subscription
          ? await sharedSubscriptionContext(ctx.extra, contextFactory)
          : await contextFactory(),
        // A subscription keeps its arguments as long as it lives: no envelope to hold on to.
        rootValue: subscription ? undefined : { execute },
      };
    },
    // Subscriptions run on graphql-js directly, with a leaner result stream (executed-stream.ts): envelop's
    // subscribe wraps every stream in three iterator layers for yoga's built-in hooks, about 6 KB per idle
    // subscription, a third of its memory (npm run bench -- --only memory). Those hooks mask errors; the
    // operation's messages are masked with yoga's maskError instead (ws-operations.ts).
    // A subscription the database could not start ends with an `error` message, not a result and `complete`,
    // masked as SERVICE_UNAVAILABLE.
    run: async (args) => {
      const root = args.rootValue as Envelope | undefined;
      if (root) return root.execute(args);
      const result = await gate.observe(
        { transport: 'graphql-ws', document: args.document, operationName: args.operationName },
        async () => subscribeExecuted(args),
      );
      if (Symbol.asyncIterator in result) return result;
      const unavailable = unavailableError(result);
      return unavailable ? failedStream(unavailable.originalError ?? unavailable) : result;
    },
  };

  const server = makeServer<Record<string, unknown>, Extra>({
    // The transport enforces it with the sweeper's shared timer instead of a timer per socket.
    connectionInitWaitTimeout: Number.POSITIVE_INFINITY,
    // `subscribe` messages of acknowledged sockets are run by ws-operations.ts (see `route` below); graphql-ws
    // answers the others (4401) and every other message.
    onConnect: async (ctx) => {
      // connection_init arrived in time; a slow token check (a JWKS fetch) must not turn into a 4408.
      sweeper.cancelDeadline(ctx.extra.socket);
      const params = ctx.connectionParams as Record<string, unknown> | undefined;
      let viewer: Viewer;
      try {
        const token = bearerToken(String(params?.authorization ?? ''));
        if (!token) return false;
        viewer = await verifier.verify(token);
      } catch {
        return false;
      } finally {
        // graphql-ws keeps the connection params as long as the socket; the viewer is all that is needed
        // from now on. (Replaced, not edited: deleting a key turns an object into a costlier hash table.)
        (ctx as { connectionParams?: unknown }).connectionParams = undefined;
      }
      // The socket may have closed while the token was checked: onClose has run already and found no
      // viewer to release, so counting it now would hold one of the user's slots forever.
      if (ctx.extra.socket.readyState !== ctx.extra.socket.OPEN) return false;
      if (!openStreams.tryOpen(viewer.id)) {
        ctx.extra.socket.close(CLOSE_TOO_MANY_SOCKETS, 'Too many open sockets for this user');
        return false;
      }
      ctx.extra.viewer = viewer;
      ctx.extra.protocol = ctx;
      const { socket } = ctx.extra;
      if (viewer.expiresAt)
        sweeper.closeAt(socket, viewer.expiresAt * 1000, CLOSE_FORBIDDEN, 'Token expired');
      return true;
    },
    onClose: (ctx: Context<Record<string, unknown>, Extra>) => {
      release(ctx.extra.viewer);
      ctx.extra.viewer = undefined;
      ctx.extra.protocol = undefined;
    },
  });
  const transport = serveGraphQLOverWebSocket(wss, server, {
    logger,
    route: (channel, extra, message) => {
      const ctx = (extra as Extra).protocol;
      if ((message as { type?: unknown }).type !== MessageType.Subscribe || !ctx?.acknowledged)
        return undefined;
      return runOperation(ctx, channel, message, hooks);
    },
    sweeper,
    initTimeoutMs: INIT_TIMEOUT_MS,
    maxInitPayloadBytes: options.limits.maxInitPayloadBytes,
    maxMessageBytes: options.maxUpdateBytes,
    maxBufferedBytes: options.maxBufferedBytes,
  });
  wss.on('error', (error) => logger.error({ err: error }, 'websocket server error'));

  return {
    async close() {
      sweeper.stop();
      await transport.dispose();
    },
  };
}

/** The envelope's execute: one result, or a stream of them for an operation that defers (run takes both). */
type Envelope = {
  execute: (args: ExecutionArgs) => Promise<ExecutionResult | AsyncIterableIterator<ExecutionResult>>;
};

/** A stream whose first step fails with `error`. */
function failedStream(error: Error): AsyncIterableIterator<never> {
  const stream: AsyncIterableIterator<never> = {
    next: () => Promise.reject(error),
    return: async () => ({ done: true, value: undefined }),
    [Symbol.asyncIterator]: () => stream,
  };
  return stream;
}
