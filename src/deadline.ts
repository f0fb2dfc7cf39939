/**
 * `work`, or the error `timedOut()` makes once `deadlineMs` has passed, whichever comes first. The work itself
 * cannot be stopped from here: it goes on, and whatever it settles with later is dropped.
 */
export function withDeadline<T>(work: Promise<T>, deadlineMs: number, timedOut: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(timedOut()), deadlineMs);
    timer.unref();
  });
  work.catch(() => {});
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

/** A wait that outran its deadline. */
export class DeadlineExceededError extends Error {
  override name = 'DeadlineExceededError';
}
