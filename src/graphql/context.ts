import DataLoader from 'dataloader';
import { GraphQLError } from 'graphql';
import type { Viewer } from '../auth/tokens.js';
import type { AvatarTaskEventRow } from '../db/schema.js';
import { readAgainIfUnavailable } from '../db/unavailable.js';
import type { TaskRepository } from '../tasks/repository.js';
import type { TaskService } from '../tasks/service.js';
import type { TaskUpdates } from '../tasks/updates.js';

export interface GatewayServices {
  tasks: TaskService;
  repository: TaskRepository;
  updates: TaskUpdates;
}

export interface GraphQLContext extends GatewayServices {
  /** null when the request carried no token: only introspection works then. */
  viewer: Viewer | null;
  /** Batches `AvatarTask.events` over a page of tasks; uncached, so a subscription sees fresh history. */
  eventsByTask: Pick<DataLoader<string, AvatarTaskEventRow[]>, 'load'>;
}

export function createContext(services: GatewayServices, viewer: Viewer | null): GraphQLContext {
  return { ...services, viewer, eventsByTask: new EventsLoader(services.repository) };
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

export function unauthenticated(message = 'Authentication required: send Authorization: Bearer <token>') {
  return new GraphQLError(message, { extensions: { code: 'UNAUTHENTICATED', http: { status: 401 } } });
}

export function requireViewer(context: GraphQLContext): Viewer {
  if (!context.viewer) throw unauthenticated();
  return context.viewer;
}
