import type { AvatarTaskRow, StoredResultRow } from '../db/schema.js';
import type { TaskSignal } from '../events/bus.js';
import type { SignalDispatcher, SignalWatcher } from '../events/dispatcher.js';
import { preloadStoredResults } from '../storage/preloaded-results.js';
import { contextFromTraceParent, inSpan, SpanKind, TASK_ID } from '../telemetry/tracing.js';
import { TaskNotFoundError } from './errors.js';
import { withPreloadedEvents } from './preloaded-events.js';
import { PullStream } from './pull-stream.js';
import { ReplayReads } from './replay-reads.js';
import type { TaskRepository } from './repository.js';
import { isTerminal } from './states.js';

/**
 * A stream's read after a signal, traced as the delivery of the change that signal announced: a child of the
 * span that published it, on whichever instance that was. Untraced signals (tracing off) cost nothing here.
 */
function deliverTraced<T extends { items: AvatarTaskRow[] }>(
  trace: string | undefined,
  stream: string,
  read: () => Promise<T>,
): Promise<T> {
  if (trace === undefined) return read();
  return inSpan(
    'avatarTaskUpdated.deliver',
    {
      kind: SpanKind.CONSUMER,
      parent: contextFromTraceParent(trace),
      attributes: { 'avatar.stream': stream },
    },
    async (span) => {
      const result = await read();
      const [first] = result.items;
      if (first) span.setAttributes({ [TASK_ID]: first.id, 'avatar.task.version': first.version });
      span.setAttribute('avatar.delivered', result.items.length);
      return result;
    },
  );
}

import type { WatchedTasks } from './watched-tasks.js';

/** Allowance for clocks of several instances when a resync re-reads "what changed since we started". */
const CLOCK_SKEW_MS = 5_000;

/** Counts the streams open on this instance, whatever transport carries them (a Prometheus gauge). */
export interface OpenStreamsGauge {
  inc(): void;
  dec(): void;
}

/** What every stream needs, shared: one reference per stream instead of one per dependency. */
interface StreamDependencies {
  repository: TaskRepository;
  dispatcher: SignalDispatcher;
  openStreams: OpenStreamsGauge;
  /** Tasks a `since` replay reads at a time (SINCE_REPLAY_PAGE_SIZE). */
  replayPageSize: number;
  /** Reads replay pages, those of streams replaying at the same time in one query. */
  replayReads: ReplayReads;
  /** Where a stream on one unfinished task says someone is looking, so the poller checks it sooner. */
  watched: Pick<WatchedTasks, 'add' | 'remove'> | undefined;
  /** Reads the stored copies of several tasks at once, for a read that sends more than one SUCCEEDED task. */
  storedResults: ((taskIds: readonly string[]) => Promise<StoredResultRow[]>) | undefined;
}

/** Where a replay goes on from: tasks changed after `since`, or at `since` after `afterId`. */
interface ReplayCursor {
  since: Date;
  afterId: string | undefined;
}

/**
 * Live task streams. Each stream listens on the bus before it reads the database, so a change committed
 * in between is seen, and it remembers the last version sent per task, so nothing is delivered twice.
 */
export class TaskUpdates {
  private readonly dependencies: StreamDependencies;

  constructor(
    repository: TaskRepository,
    dispatcher: SignalDispatcher,
    openStreams: OpenStreamsGauge = { inc() {}, dec() {} },
    options: {
      replayPageSize?: number;
      watched?: StreamDependencies['watched'];
      storedResults?: StreamDependencies['storedResults'];
    } = {},
  ) {
    const replayPageSize = options.replayPageSize ?? 100;
    this.dependencies = {
      repository,
      dispatcher,
      openStreams,
      replayPageSize,
      replayReads: new ReplayReads((requests, limit) => repository.listUpdatedSinceForMany(requests, limit), {
        pageSize: replayPageSize,
      }),
      watched: options.watched,
      storedResults: options.storedResults,
    };
  }

  /** One task: its current state, then each change, ending after a terminal state. */
  async watchTask(userId: string, taskId: string): Promise<AsyncIterableIterator<AvatarTaskRow>> {
    const stream = new TaskStream(this.dependencies, userId, taskId);
    let current: AvatarTaskRow | undefined;
    try {
      current = await this.dependencies.repository.findForUser(userId, taskId);
    } catch (error) {
      void stream.return();
      throw error;
    }
    if (!current) {
      void stream.return();
      throw new TaskNotFoundError();
    }
    stream.start(current);
    return stream;
  }

  /**
   * Every change to a user's tasks. With `since`, first each task changed after that instant, oldest
   * change first, then live changes.
   */
  watchUser(userId: string, since?: Date): AsyncIterableIterator<AvatarTaskRow> {
    return new UserStream(this.dependencies, userId, since);
  }
}

/**
 * One task's stream. While idle it keeps the last version sent and whether it was final, not the row: a
 * row is a few dozen strings and dates, times every open subscription.
 */
class TaskStream extends PullStream<AvatarTaskRow> implements SignalWatcher {
  private sentVersion = 0;
  /** The trace of the signal the next read answers, while tracing is on (see deliverTraced). */
  private signalTrace: string | undefined;
  private watching = false;

  constructor(
    private readonly dependencies: StreamDependencies,
    private readonly userId: string,
    private readonly taskId: string,
  ) {
    super(false);
    dependencies.dispatcher.watchTask(taskId, this);
    dependencies.openStreams.inc();
  }

  /** The snapshot read after listening began: sent first; a change signalled meanwhile is read next. */
  start(snapshot: AvatarTaskRow): void {
    this.sentVersion = snapshot.version;
    const done = isTerminal(snapshot.state);
    if (!done && this.dependencies.watched) {
      this.dependencies.watched.add(this.taskId);
      this.watching = true;
    }
    this.deliver(snapshot, done);
  }

  onSignal(signal: TaskSignal): void {
    if (signal.userId === this.userId && signal.version > this.sentVersion) {
      if (signal.trace) this.signalTrace = signal.trace;
      this.changed();
    }
  }

  onResync(): void {
    this.changed();
  }

  protected pull() {
    const trace = this.signalTrace;
    this.signalTrace = undefined;
    return deliverTraced(trace, 'task', () => this.read());
  }

  private async read() {
    const { repository } = this.dependencies;
    const fresh = await repository.findForUser(this.userId, this.taskId);
    if (!fresh || fresh.version <= this.sentVersion) return { items: [], done: false };
    const done = isTerminal(fresh.state);
    // The final update carries its history, read here where a failed read is retried (see preloaded-events.ts).
    if (done) withPreloadedEvents(fresh, await repository.listEvents(fresh.id));
    this.sentVersion = fresh.version;
    return { items: [fresh], done };
  }

  protected close(): void {
    this.dependencies.dispatcher.unwatchTask(this.taskId, this);
    this.dependencies.openStreams.dec();
    if (this.watching) this.dependencies.watched?.remove(this.taskId);
    this.watching = false;
  }
}

/** Every change to one user's tasks, each task's latest state once per pull. */
class UserStream extends PullStream<AvatarTaskRow> implements SignalWatcher {
  private readonly sentVersions = new Map<string, number>();
  private readonly changedIds = new Set<string>();
  private readonly startedAt = Date.now();
  /** The trace of the latest signal the next read answers, while tracing is on (see deliverTraced). */
  private signalTrace: string | undefined;
  /**
   * First the replay of `since`, later a re-read after signals may have been lost: read a page per pull, so a
   * reader that stops reading holds one page, not every task it asked for.
   */
  private replay: ReplayCursor | undefined;

  constructor(
    private readonly dependencies: StreamDependencies,
    private readonly userId: string,
    since: Date | undefined,
  ) {
    super(since !== undefined);
    this.replay = since === undefined ? undefined : { since, afterId: undefined };
    dependencies.dispatcher.watchUser(userId, this);
    dependencies.openStreams.inc();
  }

  onSignal(signal: TaskSignal): void {
    if (signal.version > (this.sentVersions.get(signal.taskId) ?? 0)) {
      if (signal.trace) this.signalTrace = signal.trace;
      this.changedIds.add(signal.taskId);
      this.changed();
    }
  }

  onResync(): void {
    this.replay = { since: new Date(this.startedAt - CLOCK_SKEW_MS), afterId: undefined };
    this.changed();
  }

  protected pull() {
    const trace = this.signalTrace;
    this.signalTrace = undefined;
    return deliverTraced(trace, 'user', () => this.read());
  }

  private async read() {
    // Read everything first, then move the replay on and mark it sent: a read that fails (the database
    // unavailable) leaves the stream as it was, to be read again, so nothing is marked sent that was never
    // delivered.
    const { repository, replayReads, replayPageSize, storedResults } = this.dependencies;
    const ids = [...this.changedIds];
    this.changedIds.clear();
    const rows: Array<AvatarTaskRow | undefined> = [];
    let advanceReplay: (() => void) | undefined;
    try {
      if (this.replay) {
        const cursor = this.replay;
        const page = await replayReads.read({
          userId: this.userId,
          since: cursor.since,
          afterId: cursor.afterId,
        });
        rows.push(...page);
        const last = page.at(-1);
        advanceReplay = () => {
          // A resync may have restarted the replay meanwhile; it wins.
          if (this.replay === cursor) {
            this.replay =
              last && page.length === replayPageSize
                ? { since: last.updatedAt, afterId: last.id }
                : undefined;
          }
          // More to read: on the consumer's next pull, not now.
          if (this.replay) this.changed();
        };
      }
      for (const id of ids) rows.push(await repository.findForUser(this.userId, id));
      // A replay page sends each task as its own update: their copies are read here in one query, not one
      // per task when each update's result URLs are resolved. A single live update reads them only if asked.
      const unsent = rows.filter(
        (task): task is AvatarTaskRow =>
          task !== undefined && task.version > (this.sentVersions.get(task.id) ?? 0),
      );
      const succeeded = unsent.filter((task) => task.state === 'SUCCEEDED').length;
      if (storedResults && (succeeded > 1 || (succeeded === 1 && advanceReplay))) {
        await preloadStoredResults(unsent, storedResults);
      }
    } catch (error) {
      for (const id of ids) this.changedIds.add(id);
      throw error;
    }
    advanceReplay?.();
    const items: AvatarTaskRow[] = [];
    for (const task of rows) {
      if (!task || task.version <= (this.sentVersions.get(task.id) ?? 0)) continue;
      this.sentVersions.set(task.id, task.version);
      items.push(task);
    }
    return { items, done: false };
  }

  protected close(): void {
    this.dependencies.dispatcher.unwatchUser(this.userId, this);
    this.dependencies.openStreams.dec();
  }
}
