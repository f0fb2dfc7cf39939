import type postgres from 'postgres';
import { withDeadline } from '../deadline.js';
import { DatabaseUnavailableError } from './unavailable.js';

/** The parts of a postgres.js query this relies on: it is a promise that runs when first awaited. */
interface PendingQuery extends Promise<unknown> {
  cancel(): unknown;
  reject(error: unknown): void;
  /** Set once the query was handed to a connection. */
  state?: unknown;
}

const isQuery = (value: unknown): value is PendingQuery =>
  value instanceof Promise && typeof (value as Partial<PendingQuery>).cancel === 'function';

/**
 * A postgres.js client whose every query fails with DatabaseUnavailableError once it has waited `deadlineMs`,
 * whatever it waits on: a free connection, a connect that hangs, or an answer that never comes. The server's
 * statement_timeout cannot do this (its answer may be what is lost), nor can postgres.js, which has no
 * per-query timeout. A query still queued is also taken out of the queue; one already sent is left to its
 * connection, whose watchdog (socket-watchdog.ts) ends it if it is dead.
 *
 * A transaction (`begin`) gets one deadline for the whole of it; if it starts only after its deadline has
 * passed, its body is not run, so nothing the caller already gave up on commits later.
 */
export function withQueryDeadlines(sql: postgres.Sql, deadlineMs: number): postgres.Sql {
  const timed = <T>(value: T): T => {
    if (isQuery(value)) armOnFirstAwait(value, deadlineMs);
    return value;
  };
  return new Proxy(sql, {
    apply: (target, thisArg, args) => timed(Reflect.apply(target, thisArg, args)),
    get(target, property, receiver) {
      if (property === 'unsafe') {
        return (...args: Parameters<postgres.Sql['unsafe']>) => timed(target.unsafe(...args));
      }
      if (property === 'begin') return (...args: unknown[]) => beginWithDeadline(target, args, deadlineMs);
      return Reflect.get(target, property, receiver);
    },
  });
}

/** Fragments built with the template tag are queries too but never awaited: only an awaited one is timed. */
function armOnFirstAwait(query: PendingQuery, deadlineMs: number): void {
  const then = query.then;
  let armed = false;
  // biome-ignore lint/suspicious/noThenProperty: the deadline starts where postgres.js starts the query, at its first then.
  query.then = function (this: PendingQuery, ...args: Parameters<Promise<unknown>['then']>) {
    if (!armed) {
      armed = true;
      const timer = setTimeout(() => {
        query.reject(new DatabaseUnavailableError(`the database did not answer within ${deadlineMs} ms`));
        // Only a query not yet sent: cancelling a sent one opens a connection, which may fail unobserved.
        if (!query.state) query.cancel();
      }, deadlineMs);
      timer.unref();
      const disarm = () => clearTimeout(timer);
      then.call(query, disarm, disarm);
    }
    return then.apply(this, args);
  } as PendingQuery['then'];
}

function beginWithDeadline(sql: postgres.Sql, args: unknown[], deadlineMs: number): Promise<unknown> {
  const body = args.at(-1) as (transaction: postgres.TransactionSql) => unknown;
  const head = args.slice(0, -1) as [string?];
  return transactionWithDeadline(
    (guarded) => (sql.begin as (...all: unknown[]) => Promise<unknown>)(...head, guarded(body)),
    deadlineMs,
  );
}

/**
 * Runs `start(guarded)` (a driver's transaction, whose body is wrapped by `guarded`) with one deadline for the
 * whole. A body that only starts after the deadline is refused, so it cannot commit behind the caller's back.
 */
export function transactionWithDeadline<R>(
  start: (guarded: <A extends unknown[], T>(body: (...args: A) => T) => (...args: A) => T) => Promise<R>,
  deadlineMs: number,
): Promise<R> {
  let abandoned = false;
  const transaction = start((body) => (...args) => {
    if (abandoned) throw new DatabaseUnavailableError('transaction started after its deadline');
    return body(...args);
  });
  return raceDeadline(transaction, deadlineMs, () => {
    abandoned = true;
  });
}

/** `work`, or DatabaseUnavailableError after `deadlineMs`; `onTimeout` runs when the deadline wins. */
export function raceDeadline<T>(work: Promise<T>, deadlineMs: number, onTimeout?: () => void): Promise<T> {
  return withDeadline(work, deadlineMs, () => {
    onTimeout?.();
    return new DatabaseUnavailableError(`the database did not answer within ${deadlineMs} ms`);
  });
}
