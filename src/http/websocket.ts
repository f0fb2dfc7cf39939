import type { Server } from 'node:http';
import { GraphQLError, subscribe as graphqlSubscribe } from 'graphql';
import { type Context, makeServer, type OperationResult } from 'graphql-ws';
import type { Logger } from 'pino';
import { WebSocketServer } from 'ws';
import { bearerToken, type TokenVerifier, type Viewer } from '../auth/tokens.js';
import type { WebSocketLimits } from '../config.js';
import type { CorsPolicy } from './cors.js';
import { unavailableError } from './error-masking.js';
import type { OpenStreams } from './open-streams.js';
import type { OperationGate } from './operation-gate.js';
import { SocketSweeper } from './socket-sweeper.js';
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

type Extra = SocketExtra & { viewer?: Viewer };

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

  const { mask } = gate;

  const server = makeServer<Record<string, unknown>, Extra>({
    // The transport enforces it with the sweeper's shared timer instead of a timer per socket.
    connectionInitWaitTimeout: Number.POSITIVE_INFINITY,
    execute: (args) => (args.rootValue as Envelope).execute(args),
    // Subscriptions run on graphql-js directly: envelop's subscribe wraps every stream in three iterator
    // layers for yoga's built-in hooks, about 6 KB per idle subscription, a third of its memory (npm run
    // bench -- --only memory). Those hooks mask errors; onNext and onError below do it with yoga's maskError.
    // A subscription the database could not start ends with an `error` message, not a result and `complete`:
    // graphql-ws sends `error` for a stream that throws, and onError below masks it as SERVICE_UNAVAILABLE.
    subscribe: async (args) => {
      const result = await gate.observe(
        { transport: 'graphql-ws', document: args.document, operationName: args.operationName },
        async () => graphqlSubscribe(args),
      );
      if (Symbol.asyncIterator in result) return result;
      const unavailable = unavailableError(result);
      return unavailable ? failedStream(unavailable.originalError ?? unavailable) : result;
    },
    onNext: (_ctx, _id, _payload, _args, result) =>
      result.errors ? { ...result, errors: result.errors.map(mask) } : undefined,
    onError: (_ctx, _id, _payload, errors) => errors.map(mask),
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
      const { socket } = ctx.extra;
      if (viewer.expiresAt)
        sweeper.closeAt(socket, viewer.expiresAt * 1000, CLOSE_FORBIDDEN, 'Token expired');
      return true;
    },
    onClose: (ctx: Context<Record<string, unknown>, Extra>) => {
      release(ctx.extra.viewer);
      ctx.extra.viewer = undefined;
    },
    onSubscribe: async (ctx, _id, params) => {
      // graphql-ws has already reserved this operation's slot in ctx.subscriptions.
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
      const { document, operation } = admission;
      const { schema, execute, contextFactory } = admission.envelope;
      return {
        schema,
        operationName: params.operationName,
        document,
        variableValues: params.variables,
        contextValue: await contextFactory(),
        // A subscription keeps its arguments as long as it lives: no envelope to hold on to.
        rootValue: operation === 'subscription' ? undefined : { execute },
      };
    },
  });
  const transport = serveGraphQLOverWebSocket(wss, server, {
    logger,
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

type Envelope = { execute: (args: unknown) => OperationResult };

/** A stream whose first step fails with `error`. */
function failedStream(error: Error): AsyncIterableIterator<never> {
  const stream: AsyncIterableIterator<never> = {
    next: () => Promise.reject(error),
    return: async () => ({ done: true, value: undefined }),
    [Symbol.asyncIterator]: () => stream,
  };
  return stream;
}
