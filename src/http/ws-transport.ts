import { CloseCode, handleProtocols, type makeServer } from 'graphql-ws';
import type { Logger } from 'pino';
import type { WebSocket, WebSocketServer } from 'ws';
import type { SocketSweeper } from './socket-sweeper.js';

/** What graphql-ws's server hands to its hooks for each socket. */
export interface SocketExtra {
  socket: WebSocket;
}

export interface WebSocketTransportOptions {
  logger: Logger;
  sweeper: SocketSweeper;
  /** A socket that has not sent connection_init by then is closed with 4408, as graphql-ws does. */
  initTimeoutMs: number;
}

/**
 * Carries graphql-ws's protocol (its `makeServer`) over a `ws` server: graphql-ws's documented way to plug in a
 * WebSocket library. Used instead of `graphql-ws/use/ws` for memory: that adapter gives every socket its own
 * keep-alive timers, and its async message listener stays suspended for as long as the operation a message
 * started, holding the message's buffer. Here timers are the sweeper's, shared by all sockets, and the
 * listener returns at once.
 */
export function serveGraphQLOverWebSocket(
  wss: WebSocketServer,
  server: ReturnType<typeof makeServer<Record<string, unknown>, SocketExtra>>,
  options: WebSocketTransportOptions,
): { dispose(): Promise<void> } {
  const { logger, sweeper } = options;
  wss.options.handleProtocols = handleProtocols;

  wss.on('connection', (socket) => {
    const fail = (error: unknown) => {
      logger.error({ err: error }, 'websocket failed');
      socket.close(CloseCode.InternalServerError, 'Internal server error');
    };
    // `on`, not `once`: each `once` wraps its listener in two more objects, per socket.
    socket.on('error', fail);
    sweeper.track(socket);
    sweeper.closeAt(
      socket,
      Date.now() + options.initTimeoutMs,
      CloseCode.ConnectionInitialisationTimeout,
      'Connection initialisation timeout',
    );
    const closed = server.opened(
      {
        protocol: socket.protocol,
        send: (data) =>
          new Promise<void>((resolve, reject) => {
            if (socket.readyState !== socket.OPEN) return resolve();
            socket.send(data, (error) => (error ? reject(error) : resolve()));
          }),
        close: (code, reason) => socket.close(code, reason),
        onMessage: (handle) =>
          socket.on('message', (data) => {
            handle(String(data)).catch(fail);
          }),
      },
      { socket },
    );
    socket.on('close', (code, reason) => {
      closed(code, String(reason)).catch((error: unknown) =>
        logger.error({ err: error }, 'closing a websocket failed'),
      );
    });
  });

  return {
    async dispose() {
      for (const client of wss.clients) client.close(1001, 'Server shutting down');
      wss.removeAllListeners();
      await new Promise<void>((resolve, reject) => wss.close((error) => (error ? reject(error) : resolve())));
    },
  };
}
