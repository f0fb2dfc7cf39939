import net from 'node:net';

/** Thrown into postgres.js when a connection owed an answer and went silent: its queries fail with it. */
export class DeadConnectionError extends Error {
  override name = 'DeadConnectionError';
  readonly code = 'DEAD_CONNECTION';
}

export interface WatchedSocketOptions {
  /** Longest silence while the server owes an answer before the connection is taken for dead. */
  answerTimeoutMs: number;
  /** TCP keep-alive's idle time, for connections that owe nothing (e.g. a peer that vanished while idle). */
  keepAliveMs: number;
  /** Told when a socket closed for any reason other than destroyAll(). */
  onLost?: () => void;
  /**
   * Told the server process id of a connection found dead: its session may hold locks (a statement run,
   * its Sync lost), and the server, whose side of the flow looks alive, would keep them for good.
   */
  onDead?: (backendPid: number) => void;
}

/** What postgres.js passes to its `socket` option. */
interface SocketTarget {
  host: string[];
  port: number[];
  path?: string | false;
}

// ReadyForQuery: 'Z', length 5, then the transaction status (idle, in a transaction, failed transaction).
const READY_FOR_QUERY_PREFIX = Buffer.from([0x5a, 0, 0, 0, 5]);
// BackendKeyData: 'K', length 12, then the server's process id and the cancel secret.
const BACKEND_KEY_DATA_PREFIX = Buffer.from([0x4b, 0, 0, 0, 12]);
const TRANSACTION_STATUSES = new Set([0x49, 0x54, 0x45]);

/**
 * A socket factory for postgres.js's `socket` option that finds connections that died without a word.
 *
 * A flow that is black-holed (no RST, no FIN) never errors: postgres.js waits on it forever, and TCP keep-alive
 * does not help while written data is unacknowledged or, behind a proxy, acknowledged but never answered. So
 * each socket is watched: from a write until the server's ReadyForQuery the server owes an answer, and if
 * nothing at all arrives for `answerTimeoutMs` meanwhile, the socket is destroyed. postgres.js then fails the
 * queries on that connection (and only those) and opens a new one for the next query.
 *
 * What kills one flow usually kills its siblings: when one is found dead, every idle one that has heard
 * nothing since before that one went silent is closed too, so the next queries do not each wait out a
 * deadline on a dead idle connection first (a closed idle connection costs only a reconnect).
 *
 * The end of an answer is recognised by a chunk ending in ReadyForQuery, which needs the plain protocol: with
 * TLS the bytes on this socket are encrypted, so TLS connections get keep-alive only (see the README).
 */
export function createWatchedSocketFactory(options: WatchedSocketOptions) {
  const sockets = new Map<net.Socket, Watch | undefined>();

  const kill = (socket: net.Socket, watched: Watch | undefined, reason: string) => {
    if (socket.destroyed) return;
    destroyWithError(socket, reason);
    if (watched?.backendPid !== undefined) options.onDead?.(watched.backendPid);
  };

  const died = (socket: net.Socket, watched: Watch) => {
    const silentSince = watched.lastHeardAt;
    kill(
      socket,
      watched,
      `the database sent nothing for ${options.answerTimeoutMs} ms while an answer was due`,
    );
    for (const [sibling, state] of sockets) {
      if (state && !state.owed && state.lastHeardAt <= silentSince) {
        kill(sibling, state, 'idle since before a sibling connection was found dead');
      }
    }
  };

  const factory = (target: SocketTarget & { ssl?: unknown }): net.Socket => {
    const socket = target.path
      ? net.connect(target.path)
      : net.connect(target.port[0] ?? 5432, target.host[0] ?? 'localhost');
    socket.setKeepAlive(true, options.keepAliveMs);
    sockets.set(socket, target.ssl ? undefined : watch(socket, options.answerTimeoutMs, died));
    socket.once('close', () => {
      if (sockets.delete(socket)) options.onLost?.();
    });
    return socket;
  };

  return {
    factory,
    /** Destroys every socket this factory made: their queries fail and postgres.js reconnects on demand. */
    destroyAll(reason: string): void {
      const doomed = [...sockets.keys()];
      sockets.clear();
      for (const socket of doomed) destroyWithError(socket, reason);
    },
  };
}

interface Watch {
  /** The server owes an answer (written since its last ReadyForQuery). */
  owed: boolean;
  /** Date.now() of the last bytes received (or of the connect). */
  lastHeardAt: number;
  backendPid: number | undefined;
}

function watch(
  socket: net.Socket,
  answerTimeoutMs: number,
  died: (socket: net.Socket, watched: Watch) => void,
): Watch {
  const state: Watch = { owed: false, lastHeardAt: Date.now(), backendPid: undefined };
  let silence: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(silence);
    silence = setTimeout(() => died(socket, state), answerTimeoutMs);
    silence.unref();
  };
  const write = socket.write;
  socket.write = function (this: net.Socket, ...args: Parameters<net.Socket['write']>) {
    if (!state.owed) {
      state.owed = true;
      arm();
    }
    return write.apply(this, args);
  } as net.Socket['write'];
  socket.on('data', (chunk: Buffer) => {
    state.lastHeardAt = Date.now();
    // The key data comes once, among the first messages of the session.
    if (state.backendPid === undefined) {
      const at = chunk.indexOf(BACKEND_KEY_DATA_PREFIX);
      if (at >= 0 && chunk.length >= at + 9) state.backendPid = chunk.readInt32BE(at + 5);
    }
    if (!state.owed) return;
    if (endsWithReadyForQuery(chunk)) {
      state.owed = false;
      clearTimeout(silence);
    } else {
      arm();
    }
  });
  socket.once('close', () => clearTimeout(silence));
  return state;
}

function endsWithReadyForQuery(chunk: Buffer): boolean {
  const at = chunk.length - 6;
  return (
    at >= 0 &&
    chunk.subarray(at, at + 5).equals(READY_FOR_QUERY_PREFIX) &&
    TRANSACTION_STATUSES.has(chunk[at + 5] ?? 0)
  );
}

/**
 * postgres.js removes every listener from a socket it upgrades to TLS or has seen close, so a socket destroyed
 * with an error may have nobody to hear it: an unhandled 'error' event would end the process. While postgres.js
 * listens, its listener alone hears the error and fails the connection's queries.
 */
function destroyWithError(socket: net.Socket, reason: string): void {
  if (socket.listenerCount('error') === 0) socket.on('error', ignoreError);
  socket.destroy(new DeadConnectionError(reason));
}

function ignoreError(): void {}
