import type { Server } from 'node:http';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { DeadlineExceededError, withDeadline } from './deadline.js';
import type { RequestTracker } from './http/request-tracker.js';

/** What a draining stop did: clean when every step finished in time. */
export interface ShutdownReport {
  clean: boolean;
  /** The steps that failed or ran out of time. */
  problems: string[];
  ms: number;
}

export interface DrainableParts {
  server: Server;
  requests: RequestTracker;
  /** Ends the lean SSE transport's streams. */
  endSseStreams(): void;
  /** Stops claiming new work; resolves when the work in hand is done. */
  stopPoller(): Promise<void>;
  /** Gives up the leases of work the poller could not finish in time. */
  releasePollerLeases(): Promise<void>;
  /** Resolves when every kie submit in flight has its outcome recorded. */
  submitsSettled(): Promise<void>;
  /** Closes every graphql-ws socket with 1001. */
  closeSockets(): Promise<void>;
  /** Whether the database still answers: if not, what the in-flight work did may not be recorded. */
  pingDatabase(): Promise<void>;
  /** The rest, in order: the event bus, the kie client, the simulator, the database. */
  release: Array<{ name: string; run: () => Promise<void> | void }>;
}

/** The last look at the database, before closing it. */
const PING_BUDGET_MS = 1_000;

/** Time kept back from the in-flight work for the steps after it (leases, bus, database). */
const RELEASE_RESERVE_MS = 3_000;

export interface DrainOptions {
  deadlineMs: number;
  /**
   * How long the listening socket stays open after the drain begins. Connections the kernel has accepted but
   * a busy event loop has not yet picked up are reset unanswered the moment it closes; a process that was
   * signalled keeps it open a moment, while /readyz already says 503 (which is also what a load balancer
   * needs to stop sending new connections).
   */
  listenGraceMs?: number;
}

/**
 * A draining stop, within `deadlineMs`: no new connections, event streams ended (their clients reconnect
 * elsewhere), in-flight kie submits and HTTP requests finished and recorded, sockets closed with 1001, poller
 * leases released, then everything else closed. Each step has what is left of the deadline; a step that fails
 * or runs out (the database is gone, say) is logged and the next one runs, so the stop always ends in time.
 */
export async function drain(
  parts: DrainableParts,
  options: DrainOptions,
  logger: Logger,
): Promise<ShutdownReport> {
  const { deadlineMs, listenGraceMs = 0 } = options;
  const started = Date.now();
  const deadline = started + deadlineMs;
  const problems: string[] = [];
  const left = (reserveMs: number) => Math.max(0, Math.min(deadline - Date.now() - reserveMs, deadlineMs));
  const reserve = Math.min(RELEASE_RESERVE_MS, deadlineMs / 3);
  const step = async (name: string, run: () => Promise<unknown> | unknown, budgetMs: number) => {
    try {
      await withDeadline(
        Promise.resolve().then(run),
        budgetMs,
        () => new DeadlineExceededError(`${name} did not finish within ${budgetMs} ms`),
      );
    } catch (error) {
      problems.push(name);
      logger.error({ err: error }, `shutdown: ${name} failed`);
    }
  };

  // net.Server's close, not http.Server's: it stops listening without closing idle kept-alive connections,
  // on which a request may already be on its way; those are answered, then closed.
  parts.requests.closeConnectionsAfterAnswers();
  const serverClosed = sleep(Math.min(listenGraceMs, deadlineMs / 10)).then(
    () => new Promise<void>((resolve) => net.Server.prototype.close.call(parts.server, () => resolve())),
  );
  const pollerStopped = parts.stopPoller();
  parts.endSseStreams();
  parts.requests.endStreams();
  logger.info({ openRequests: parts.requests.size, deadlineMs }, 'shutdown: draining');

  await step('in-flight kie submits', () => parts.submitsSettled(), left(reserve));
  // After the submits: a mutation sent over a socket gets its answer before the socket closes.
  await step('websockets', () => parts.closeSockets(), left(reserve));
  await step('in-flight requests', () => parts.requests.idle(), left(reserve));
  parts.server.closeAllConnections();
  await step('http server', () => serverClosed, left(reserve));
  await step('poller', () => pollerStopped, left(reserve));
  await step('poller leases', () => parts.releasePollerLeases(), left(reserve / 2));
  await step('database reachable', () => parts.pingDatabase(), Math.min(PING_BUDGET_MS, left(reserve / 2)));
  for (const { name, run } of parts.release) await step(name, run, left(0));

  const ms = Date.now() - started;
  logger[problems.length === 0 ? 'info' : 'error']({ ms, problems }, 'shutdown: done');
  return { clean: problems.length === 0, problems, ms };
}
