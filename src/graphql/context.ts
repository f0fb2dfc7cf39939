import DataLoader from 'dataloader';
import { GraphQLError } from 'graphql';
import type { Viewer } from '../auth/tokens.js';
import type { AvatarTaskEventRow } from '../db/schema.js';
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
  eventsByTask: DataLoader<string, AvatarTaskEventRow[]>;
}

export function createContext(services: GatewayServices, viewer: Viewer | null): GraphQLContext {
  let eventsByTask: DataLoader<string, AvatarTaskEventRow[]> | undefined;
  return {
    ...services,
    viewer,
    // Made on first use: most operations (and every idle subscription) never select events, and a loader per
    // context would be most of an idle subscription's memory.
    get eventsByTask() {
      eventsByTask ??= new DataLoader(
        async (taskIds) => {
          const events = await services.repository.listEventsForTasks(taskIds);
          return taskIds.map((id) => events.filter((event) => event.taskId === id));
        },
        { cache: false },
      );
      return eventsByTask;
    },
  };
}

export function unauthenticated(message = 'Authentication required: send Authorization: Bearer <token>') {
  return new GraphQLError(message, { extensions: { code: 'UNAUTHENTICATED', http: { status: 401 } } });
}

export function requireViewer(context: GraphQLContext): Viewer {
  if (!context.viewer) throw unauthenticated();
  return context.viewer;
}
