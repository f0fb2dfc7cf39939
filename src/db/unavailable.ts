/**
 * "The database cannot answer right now": a query that outran its deadline, a connection that could not be
 * made or died. Callers map it to SERVICE_UNAVAILABLE / HTTP 503, which tells a client to retry.
 */
export class DatabaseUnavailableError extends Error {
  override name = 'DatabaseUnavailableError';
}

// postgres.js's own connection errors, Node's socket errors, and our watchdog's.
const CONNECTION_ERROR_CODES = new Set([
  'CONNECT_TIMEOUT',
  'CONNECTION_CLOSED',
  'CONNECTION_DESTROYED',
  'CONNECTION_ENDED',
  'DEAD_CONNECTION',
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

/**
 * SQLSTATEs that mean "not now" rather than "wrong": connection exceptions (class 08), the server shutting
 * down or starting (57P01-57P03), too many connections (53300), and a statement cancelled by its timeout
 * (57014), which is how an overloaded database answers.
 */
const UNAVAILABLE_SQLSTATE = /^(08...|57P0[123]|53300|57014)$/;

/** Whether an error (or anything in its `cause` chain: drizzle wraps driver errors) means "database down". */
export function isDatabaseUnavailable(error: unknown): boolean {
  for (let current = error, depth = 0; current && depth < 5; depth += 1) {
    if (current instanceof DatabaseUnavailableError) return true;
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && (CONNECTION_ERROR_CODES.has(code) || UNAVAILABLE_SQLSTATE.test(code))) {
      return true;
    }
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

/** How many times readAgainIfUnavailable tries in all. */
const READ_ATTEMPTS = 3;

/**
 * Runs a read that is safe to repeat, and runs it again (up to READ_ATTEMPTS in all) while it meets an
 * unavailable database: a try may land on a connection that had died unseen (see socket-watchdog.ts), which is
 * gone after it. For reads that follow one that just succeeded, such as a field of a row already read: a
 * stream's final update should not be lost to a dead connection or two.
 */
export async function readAgainIfUnavailable<T>(read: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await read();
    } catch (error) {
      if (attempt >= READ_ATTEMPTS || !isDatabaseUnavailable(error)) throw error;
    }
  }
}
