import type { Server } from 'node:http';
import { GraphQLError } from 'graphql';
import type { Context, OperationResult } from 'graphql-ws';
import { useServer } from 'graphql-ws/use/ws';
import type { Logger } from 'pino';
import { WebSocketServer } from 'ws';
import { bearerToken, type TokenVerifier, type Viewer } from '../auth/tokens.js';
import type { Metrics } from '../metrics.js';
import { type GatewayYoga, GRAPHQL_PATH } from './yoga.js';

export const CLOSE_FORBIDDEN = 4403;
export const CLOSE_TOO_MANY_SOCKETS = 4429;

export interface WebSocketOptions {
  server: Server;
  yoga: GatewayYoga;
  verifier: TokenVerifier;
  logger: Logger;
  metrics: Metrics;
  maxSocketsPerUser: number;
  maxSubscriptionsPerSocket: number;
  /** graphql-ws pings the client this often; a client that stops answering is dropped. */
  keepAliveMs?: number;
}

type Extra = {
  socket: import('ws').WebSocket;
  request: import('node:http').IncomingMessage;
  viewer?: Viewer;
  expiry?: NodeJS.Timeout;
};

/**
 * graphql-ws on the same server and path as yoga, executing through yoga's envelop, so both transports
 * share plugins, context and auth. The token is checked once at connection_init; the socket closes when
 * the token expires.
 */
export function attachGraphQLWebSocket(options: WebSocketOptions) {
  const { yoga, verifier, logger, metrics } = options;
  const socketsPerUser = new Map<string, number>();
  const wss = new WebSocketServer({ server: options.server, path: GRAPHQL_PATH });

  const release = (viewer: Viewer | undefined) => {
    if (!viewer) return;
    const left = (socketsPerUser.get(viewer.id) ?? 1) - 1;
    if (left <= 0) socketsPerUser.delete(viewer.id);
    else socketsPerUser.set(viewer.id, left);
  };

  const disposable = useServer<Record<string, unknown>, Extra>(
    {
      execute: (args) => (args.rootValue as Envelope).execute(args),
      subscribe: (args) => (args.rootValue as Envelope).subscribe(args),
      onConnect: async (ctx) => {
        let viewer: Viewer;
        try {
          const token = bearerToken(String(ctx.connectionParams?.authorization ?? ''));
          if (!token) return false;
          viewer = await verifier.verify(token);
        } catch {
          return false;
        }
        const open = socketsPerUser.get(viewer.id) ?? 0;
        if (open >= options.maxSocketsPerUser) {
          ctx.extra.socket.close(CLOSE_TOO_MANY_SOCKETS, 'Too many open sockets for this user');
          return false;
        }
        socketsPerUser.set(viewer.id, open + 1);
        ctx.extra.viewer = viewer;
        if (viewer.expiresAt) closeAtExpiry(ctx.extra, viewer.expiresAt * 1000);
        return true;
      },
      onClose: (ctx: Context<Record<string, unknown>, Extra>) => {
        clearTimeout(ctx.extra.expiry);
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
        const { schema, execute, subscribe, contextFactory, parse, validate } = yoga.getEnveloped({
          ...ctx,
          req: ctx.extra.request,
          socket: ctx.extra.socket,
          params,
          viewer: ctx.extra.viewer,
        });
        let document: ReturnType<typeof parse>;
        try {
          document = parse(params.query);
        } catch (error) {
          return [error instanceof GraphQLError ? error : new GraphQLError('Syntax error')];
        }
        const errors = validate(schema, document);
        if (errors.length > 0) return errors;
        return {
          schema,
          operationName: params.operationName,
          document,
          variableValues: params.variables,
          contextValue: await contextFactory(),
          rootValue: { execute, subscribe },
        };
      },
      onOperation: () => {
        metrics.activeSubscriptions.inc();
      },
      onComplete: () => {
        metrics.activeSubscriptions.dec();
      },
    },
    wss,
    options.keepAliveMs ?? 12_000,
  );

  wss.on('error', (error) => logger.error({ err: error }, 'websocket server error'));

  return {
    async close() {
      for (const client of wss.clients) client.close(1001, 'Server shutting down');
      await disposable.dispose();
    },
  };
}

// setTimeout fires at once for anything longer (about 24.8 days), e.g. a 30-day development token.
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Closes the socket when its token expires, however far away that is. */
function closeAtExpiry(extra: Extra, expiresAtMs: number): void {
  const ms = expiresAtMs - Date.now();
  extra.expiry = setTimeout(
    () => {
      if (ms > MAX_TIMER_MS) closeAtExpiry(extra, expiresAtMs);
      else extra.socket.close(CLOSE_FORBIDDEN, 'Token expired');
    },
    Math.max(0, Math.min(ms, MAX_TIMER_MS)),
  );
  extra.expiry.unref();
}

type Envelope = {
  execute: (args: unknown) => OperationResult;
  subscribe: (args: unknown) => OperationResult;
};
