import type { Logger } from 'pino';

/** A lease is renewed this many times per its length, so one late or failed renewal does not lose it. */
const RENEWALS_PER_LEASE = 3;

/**
 * Runs `work` on a task this instance has leased, renewing the lease while the work runs. Leases are short, so
 * the tasks of an instance that died are taken over within about one lease; renewing them keeps a long piece of
 * work (a create kie takes a minute to answer) from ever looking abandoned: another instance taking over an
 * in-flight create would mark it unknown, and a task being polled would be polled twice.
 */
/** Whatever holds leases by id: tasks, result copies. */
export interface LeaseHolder {
  renewLease(id: string, leaseMs: number): Promise<void>;
}

export async function whileLeased<T>(
  repository: LeaseHolder,
  taskId: string,
  leaseMs: number,
  logger: Logger,
  work: () => Promise<T>,
): Promise<T> {
  let renewing: Promise<unknown> | undefined;
  const timer = setInterval(() => {
    if (renewing) return;
    renewing = repository
      .renewLease(taskId, leaseMs)
      .catch((error: unknown) => logger.warn({ err: error, taskId }, 'renewing a task lease failed'))
      .finally(() => {
        renewing = undefined;
      });
  }, leaseMs / RENEWALS_PER_LEASE);
  timer.unref();
  try {
    return await work();
  } finally {
    clearInterval(timer);
  }
}
