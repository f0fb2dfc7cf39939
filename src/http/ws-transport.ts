import { CloseCode, type WebSocket as GraphQLWsSocket, handleProtocols, type makeServer } from 'graphql-ws';
import type { Logger } from 'pino';
import type { RawData, WebSocket, WebSocketServer } from 'ws';
import { exceedsBytes } from './output-limits.js';
import type { SocketSweeper } from './socket-sweeper.js';
import type { OperationChannel } from './ws-operations.js';

/** RFC 6455's "message too big", as ws closes a message over maxPayload. */
const CLOSE_MESSAGE_TOO_BIG = 1009;
/** A message (one subscription update, say) over MAX_UPDATE_BYTES. */
export const CLOSE_MESSAGE_TOO_LARGE = 4413;
/** The reader left more than MAX_BUFFERED_BYTES unread. */
export const CLOSE_READER_TOO_SLOW = 4420;

/** What graphql-ws's server hands to its hooks for each socket. */
export interface SocketExtra {
  socket: WebSocket;
}

export interface WebSocketTransportOptions {
  logger: Logger;
  /**
   * Takes a parsed message before graphql-ws does: the promise of its handling, or undefined to leave it to
   * graphql-ws (see ws-operations.ts).
   */
  route?: (channel: OperationChannel, extra: SocketExtra, message: object) => Promise<void> | undefined;
  sweeper: SocketSweeper;
  /** A socket that has not sent connection_init by then is closed with 4408, as graphql-ws does. */
  initTimeoutMs: number;
  /** A first message (connection_init, sent before any token is checked) larger than this closes with 1009. */
  maxInitPayloadBytes: number;
  /** A message to the client larger than this closes the socket with 4413. */
  maxMessageBytes: number;
  /** A socket whose reader leaves more than this unread is closed with 4420. */
  maxBufferedBytes: number;
}

/**
 * Carries graphql-ws's protocol (its `makeServer`) over a `ws` server: graphql-ws's documented way to plug in a
 * WebSocket library. Used instead of `graphql-ws/use/ws` for memory: that adapter gives every socket its own
 * keep-alive timers and closures, and its async message listener stays suspended for as long as the
 * operation a message started, holding the message's buffer. Here timers are the sweeper's, shared by all
 * sockets, and the listener returns at once.
 */
export function serveGraphQLOverWebSocket(
  wss: WebSocketServer,
  server: ReturnType<typeof makeServer<Record<string, unknown>, SocketExtra>>,
  options: WebSocketTransportOptions,
): { dispose(): Promise<void> } {
  const { logger, sweeper } = options;
  wss.options.handleProtocols = handleProtocols;
  const fail = (socket: WebSocket, error: unknown) => {
    logger.error({ err: error }, 'websocket failed');
    socket.close(CloseCode.InternalServerError, 'Internal server error');
  };
  // One listener for every socket (`this` is the socket), not a closure per socket.
  const onSocketError = function (this: WebSocket, error: Error) {
    fail(this, error);
  };

  wss.on('connection', (socket) => {
    socket.on('error', onSocketError);
    sweeper.track(socket);
    sweeper.closeAt(
      socket,
      Date.now() + options.initTimeoutMs,
      CloseCode.ConnectionInitialisationTimeout,
      'Connection initialisation timeout',
    );
    const extra: SocketExtra = { socket };
    const closed = server.opened(new SocketChannel(socket, extra, fail, options), extra);
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

/**
 * One socket as graphql-ws's server sees it. A class rather than an object of arrow functions: its methods
 * are shared by every socket, where closures would be made per socket (and each named closure carries its
 * own property store under tsx, which keeps function names).
 */
class SocketChannel implements GraphQLWsSocket, OperationChannel {
  constructor(
    private readonly socket: WebSocket,
    private readonly extra: SocketExtra,
    private readonly fail: (socket: WebSocket, error: unknown) => void,
    private readonly options: Pick<
      WebSocketTransportOptions,
      'maxInitPayloadBytes' | 'maxMessageBytes' | 'maxBufferedBytes' | 'route'
    >,
  ) {}

  /** The first message has arrived (in graphql-ws, only connection_init may come first). */
  private greeted = false;

  get protocol(): string {
    return this.socket.protocol;
  }

  send(data: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this.socket.readyState !== this.socket.OPEN) return resolve();
      // Checked before the message joins the socket's buffer: past either cap the socket ends, instead of
      // holding an amplified answer or a backlog for a reader that does not read.
      if (exceedsBytes(data, this.options.maxMessageBytes)) {
        this.socket.close(CLOSE_MESSAGE_TOO_LARGE, 'Message over MAX_UPDATE_BYTES');
        return resolve();
      }
      if (this.socket.bufferedAmount > this.options.maxBufferedBytes) {
        this.socket.close(CLOSE_READER_TOO_SLOW, 'Reader too slow: over MAX_BUFFERED_BYTES unread');
        return resolve();
      }
      this.socket.send(data, (error) => (error ? reject(error) : resolve()));
    });
  }

  close(code: number, reason: string): void {
    this.socket.close(code, reason);
  }

  failed(error: unknown): void {
    this.fail(this.socket, error);
  }

  onMessage(handle: (data: string) => Promise<void>): void {
    // One per socket, not one per message: a message that starts a subscription holds its handler for as
    // long as the subscription runs.
    const onFailure = (error: unknown) => this.fail(this.socket, error);
    // Not an async listener: it returns at once instead of staying suspended while the operation lives.
    this.socket.on('message', (data) => {
      if (!this.greeted) {
        this.greeted = true;
        if (byteLength(data) > this.options.maxInitPayloadBytes) {
          this.socket.close(CLOSE_MESSAGE_TOO_BIG, 'connection_init too big');
          return;
        }
      }
      const message = parsedOrText(String(data));
      const routed =
        typeof message === 'object' ? this.options.route?.(this, this.extra, message) : undefined;
      // graphql-ws's type says string; its parseMessage passes anything else on as the message.
      (routed ?? handle(message as string)).catch(onFailure);
    });
  }
}

/**
 * graphql-ws's message handler keeps its argument for as long as the operation the message started runs. It
 * parses only strings and takes an already parsed message as well, so it is handed the parsed object alone
 * and the text (the whole query, a few hundred bytes) is let go at once. Anything but a JSON object goes over
 * as text, for graphql-ws to refuse as it always does (4400).
 */
function parsedOrText(text: string): string | object {
  try {
    const parsed: unknown = JSON.parse(text);
    return typeof parsed === 'object' && parsed !== null ? parsed : text;
  } catch {
    return text;
  }
}

function byteLength(data: RawData): number {
  if (Array.isArray(data)) return data.reduce((sum, chunk) => sum + chunk.length, 0);
  return data.byteLength;
}
