import DataLoader from 'dataloader';
import { GraphQLError } from 'graphql';
import type { Viewer } from '../auth/tokens.js';
import type { AvatarTaskEventRow, AvatarTaskRow } from '../db/schema.js';
import { readAgainIfUnavailable } from '../db/unavailable.js';
import { preloadedStoredResults } from '../storage/preloaded-results.js';
import type { StoredResultRepository } from '../storage/repository.js';
import type { ResultLinks } from '../storage/result-links.js';
import type { TaskRepository } from '../tasks/repository.js';
import type { TaskService } from '../tasks/service.js';
import type { TaskUpdates } from '../tasks/updates.js';
import type { CreditBreaker } from '../upstream/credit-breaker.js';
import type { KieBalance } from '../upstream/kie-balance.js';

export interface GatewayServices {
  tasks: TaskService;
  repository: TaskRepository;
  updates: TaskUpdates;
  storedResults: StoredResultRepository;
  resultLinks: ResultLinks;
  /** The kie account, for operators: its balance, and whether creates are held back for want of credits. */
  kieAccount: { balance: KieBalance; creditBreaker: CreditBreaker };
}

export interface GraphQLContext extends GatewayServices {
  /** null when the request carried no token: only introspection works then. */
  viewer: Viewer | null;
  /** Batches `AvatarTask.events` over a page of tasks; uncached, so a subscription sees fresh history. */
  eventsByTask: Pick<DataLoader<string, AvatarTaskEventRow[]>, 'load'>;
  /** A task's result URLs (resultUrls and videoUrl ask once between them), batched over a page of tasks. */
  resultUrls: Pick<ResultUrlsLoader, 'load'>;
}

/**
 * Every field by name, not `...services`: on node 20, properties added to an object made by a spread cost
 * about 0.7 µs each (six services spread and three more fields: 1.8 µs; this literal: 0.1 µs), and so does
 * each field yoga then copies from it onto its own context. It is built once per HTTP request and per socket.
 */
export function createContext(services: GatewayServices, viewer: Viewer | null): GraphQLContext {
  return {
    tasks: services.tasks,
    repository: services.repository,
    updates: services.updates,
    storedResults: services.storedResults,
    resultLinks: services.resultLinks,
    kieAccount: services.kieAccount,
    viewer,
    eventsByTask: new EventsLoader(services.repository),
    resultUrls: new ResultUrlsLoader(services.storedResults, services.resultLinks),
  };
}

/**
 * Makes its DataLoader on first use: most operations (and every idle subscription) never select events,
 * and a loader per context was a good part of an idle subscription's memory. Not a getter: yoga merges
 * contexts with Object.assign, which would call it at once.
 */
class EventsLoader {
  private loader: DataLoader<string, AvatarTaskEventRow[]> | undefined;

  constructor(private readonly repository: TaskRepository) {}

  load(taskId: string): Promise<AvatarTaskEventRow[]> {
    this.loader ??= new DataLoader(
      async (taskIds) => {
        // The row these events belong to was just read: once more if their read met a dead connection.
        const events = await readAgainIfUnavailable(() => this.repository.listEventsForTasks(taskIds));
        return taskIds.map((id) => events.filter((event) => event.taskId === id));
      },
      { cache: false },
    );
    return this.loader.load(taskId);
  }
}

/**
 * Reads the stored copies of a page of SUCCEEDED tasks in one query and turns them into URLs. A task's URLs
 * are shared by the fields that ask in one go, then forgotten: a subscription's context lives on, and the
 * next update of the task must see its copy once stored.
 */
class ResultUrlsLoader {
  private loader: DataLoader<AvatarTaskRow, string[], string> | undefined;

  constructor(
    private readonly storedResults: StoredResultRepository,
    private readonly links: ResultLinks,
  ) {}

  load(task: AvatarTaskRow): Promise<string[]> {
    if (task.state !== 'SUCCEEDED' || task.resultUrls.length === 0) return Promise.resolve([]);
    // Read with a history or replay page (see src/storage/preloaded-results.ts): no query of its own.
    const preloaded = preloadedStoredResults(task);
    if (preloaded) return this.links.urlsFor(task, preloaded);
    this.loader ??= new DataLoader(
      async (tasks) => {
        const rows = await readAgainIfUnavailable(() =>
          this.storedResults.listForTasks(tasks.map((each) => each.id)),
        );
        return Promise.all(
          tasks.map((each) =>
            this.links.urlsFor(
              each,
              rows.filter((row) => row.taskId === each.id),
            ),
          ),
        );
      },
      { cacheKeyFn: (each) => `${each.id}:${each.version}` },
    );
    const urls = this.loader.load(task);
    void urls.finally(() => this.loader?.clear(task)).catch(() => {});
    return urls;
  }
}

export function unauthenticated(message = 'Authentication required: send Authorization: Bearer <token>') {
  return new GraphQLError(message, { extensions: { code: 'UNAUTHENTICATED', http: { status: 401 } } });
}

/** A user whose token lacks the operator role (AUTH_OPERATOR_CLAIM, AUTH_OPERATOR_ROLE). */
export function requireOperator(context: GraphQLContext): Viewer {
  const viewer = requireViewer(context);
  if (!viewer.operator) {
    throw new GraphQLError('Operators only: the token does not carry the operator role', {
      extensions: { code: 'FORBIDDEN', http: { status: 403 } },
    });
  }
  return viewer;
}

export function requireViewer(context: GraphQLContext): Viewer {
  if (!context.viewer) throw unauthenticated();
  return context.viewer;
}
