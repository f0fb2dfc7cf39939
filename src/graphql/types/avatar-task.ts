import { GraphQLError } from 'graphql';
import type { AvatarTaskEventRow, AvatarTaskRow } from '../../db/schema.js';
import { type TaskFailureCode, TaskNotFoundError } from '../../tasks/errors.js';
import { preloadedEvents } from '../../tasks/preloaded-events.js';
import type { TaskCursor } from '../../tasks/repository.js';
import type { avatarTaskEventSources, avatarTaskStates, TaskFailure } from '../../tasks/states.js';
import { builder } from '../builder.js';
import { type GraphQLContext, requireViewer } from '../context.js';
import { costOfValue } from '../cost.js';
import { decodeGlobalIdOrNothing } from '../global-ids.js';

export const AvatarTaskStateEnum = builder.enumType('AvatarTaskState', {
  description: 'Where a task is. SUCCEEDED, FAILED and CANCELED are terminal; a state never moves backwards.',
  values: {
    PENDING: { description: 'Accepted by the gateway, not yet acknowledged by kie.ai.' },
    WAITING: { description: "kie.ai accepted it and has not queued it yet (kie's `waiting`)." },
    QUEUING: { description: "Queued at kie.ai (kie's `queuing`)." },
    GENERATING: { description: "The video is being generated (kie's `generating`)." },
    SUCCEEDED: { description: 'Done: resultUrls holds the video.' },
    FAILED: { description: 'Ended without a video: see failure.' },
    CANCELED: {
      description:
        'Canceled by its owner (cancelAvatarTask) before it was sent to kie.ai: never rendered, never charged.',
    },
  } satisfies Record<(typeof avatarTaskStates)[number], unknown>,
});

export const AvatarModelEnum = builder.enumType('AvatarModel', {
  description: 'Which Kling avatar model renders the video.',
  values: {
    PRO: { description: 'kling/ai-avatar-pro: 1080p, about 16 credits per output second.' },
    STANDARD: { description: 'kling/ai-avatar-standard: 720p, about 8 credits per output second.' },
  },
});

const AvatarTaskEventSourceEnum = builder.enumType('AvatarTaskEventSource', {
  description: 'What caused a change in a task.',
  values: {
    MUTATION: {
      description: 'createAvatarTask, or its immediate submission to kie.ai; cancelAvatarTask.',
    },
    CALLBACK: { description: "kie.ai's callback." },
    POLLER: { description: "The gateway's poller or its submit loop." },
    TIMEOUT: { description: 'The task ran past TASK_TIMEOUT_MS.' },
  } satisfies Record<(typeof avatarTaskEventSources)[number], unknown>,
});

const AvatarTaskFailureCodeEnum = builder.enumType('AvatarTaskFailureCode', {
  description: 'Why a task ended without a video.',
  values: {
    INSUFFICIENT_CREDITS: { description: 'kie.ai refused the submit: the account has too few credits.' },
    UPSTREAM_REJECTED: { description: 'kie.ai refused the submit in a way a retry cannot fix.' },
    UPSTREAM_UNAVAILABLE: {
      description:
        "kie.ai was down and the gateway's queue of waiting submits was full (MAX_PENDING_SUBMITS).",
    },
    GENERATION_FAILED: {
      description: "kie.ai took the task and failed to render it; the message is kie.ai's.",
    },
    TIMEOUT: { description: 'kie.ai did not finish the task within TASK_TIMEOUT_MS.' },
    SUBMIT_UNCONFIRMED: {
      description:
        'The submit got no answer, and kie.ai never confirmed having the task within SUBMIT_GRACE_MS; it was not sent again, so it is never paid twice.',
    },
    CANCELED: { description: 'Canceled by its owner before it was sent to kie.ai; nothing was charged.' },
  } satisfies Record<TaskFailureCode, unknown>,
});

const AvatarTaskFailure = builder.objectRef<TaskFailure>('AvatarTaskFailure').implement({
  description: 'Why a task FAILED, or that it was CANCELED.',
  fields: (t) => ({
    code: t.expose('code', { type: AvatarTaskFailureCodeEnum, description: 'Stable code of the failure.' }),
    message: t.exposeString('message', {
      description: "What went wrong, with kie.ai's message when it gave one.",
      extensions: costOfValue(500),
    }),
  }),
});

const AvatarTaskEvent = builder.objectRef<AvatarTaskEventRow>('AvatarTaskEvent').implement({
  description: "One change in a task's history.",
  fields: (t) => ({
    state: t.expose('state', { type: AvatarTaskStateEnum, description: 'The state the task entered.' }),
    source: t.expose('source', { type: AvatarTaskEventSourceEnum, description: 'What caused the change.' }),
    at: t.expose('at', { type: 'DateTime', description: 'When the gateway recorded it.' }),
    version: t.exposeInt('version', { description: "The task's version after this change." }),
    message: t.exposeString('message', {
      nullable: true,
      description: 'Detail, e.g. a failure message.',
      extensions: costOfValue(500),
    }),
  }),
});

export const AvatarTask = builder.objectRef<AvatarTaskRow>('AvatarTask');

builder.node(AvatarTask, {
  description: 'A talking-avatar video job: a face image and a voice recording, rendered by kie.ai.',
  id: { resolve: (task) => task.id },
  loadOne: (id, context) =>
    context.repository.findForUser(requireViewer(context).id, id).then((task) => task ?? null),
  fields: (t) => ({
    state: t.expose('state', { type: AvatarTaskStateEnum, description: 'Where the task is now.' }),
    model: t.expose('model', { type: AvatarModelEnum, description: 'The model rendering it.' }),
    // Costs as long as the longest input allowed (2,048 and 5,000 characters).
    imageUrl: t.exposeString('imageUrl', {
      description: 'The face image, as given, or where kie.ai keeps the uploaded one (for 3 days).',
      extensions: costOfValue(2_048),
    }),
    audioUrl: t.exposeString('audioUrl', {
      description: 'The voice recording, as given, or where kie.ai keeps the uploaded one (for 3 days).',
      extensions: costOfValue(2_048),
    }),
    prompt: t.exposeString('prompt', {
      nullable: true,
      description: 'Optional guidance for the animation.',
      extensions: costOfValue(5_000),
    }),
    estimatedCredits: t.exposeFloat('estimatedCredits', {
      nullable: true,
      description:
        "What the task should cost in kie.ai credits: kie.ai's price per second of video for the model (16 for PRO, 8 for STANDARD) times the audio's duration, read from its headers before the task was sent. Null when the duration could not be read, or URL checks are off.",
    }),
    upstreamTaskId: t.exposeString('upstreamTaskId', {
      nullable: true,
      description: "kie.ai's task id, once kie.ai has acknowledged the task.",
    }),
    resultUrls: t.stringList({
      description:
        "The generated videos; empty until SUCCEEDED. Once the gateway has its copy, signed URLs to it, valid RESULT_URL_TTL_S (read the task again for fresh ones); until then kie.ai's link, refreshed when old. Empty again once the copy's retention ended.",
      extensions: costOfValue(1_000),
      resolve: (task, _args, context) => context.resultUrls.load(task),
    }),
    videoUrl: t.string({
      nullable: true,
      description: 'The first of resultUrls, for convenience.',
      extensions: costOfValue(300),
      resolve: async (task, _args, context) => (await context.resultUrls.load(task))[0] ?? null,
    }),
    failure: t.field({
      type: AvatarTaskFailure,
      nullable: true,
      description: 'Why the task failed (or that it was canceled); null unless FAILED or CANCELED.',
      // Every path to FAILED stores a code; a row without one still reads as a failed render, not as an
      // error that would hide the rest of the task.
      resolve: (task) =>
        task.state === 'FAILED' || task.state === 'CANCELED'
          ? { code: task.failureCode ?? 'GENERATION_FAILED', message: task.failureMessage ?? '' }
          : null,
    }),
    creditsCharged: t.float({
      nullable: true,
      resolve: (task) => task.creditsCharged,
      description:
        "What kie.ai charged the account for this task (its consumeCredits), once kie.ai reports it at the task's end; null until then, and for a task kie.ai never had.",
    }),
    version: t.exposeInt('version', {
      description: 'Goes up by one on every change; a client keeps the highest it has seen.',
    }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When the task was created.' }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime', description: 'When the task last changed.' }),
    completedAt: t.expose('completedAt', {
      type: 'DateTime',
      nullable: true,
      description: 'When the task reached SUCCEEDED, FAILED or CANCELED.',
    }),
    events: t.field({
      type: [AvatarTaskEvent],
      description: "The task's history, oldest first.",
      resolve: (task, _args, context) => preloadedEvents(task) ?? context.eventsByTask.load(task.id),
    }),
  }),
});

const AvatarTaskConnection = builder.connectionObject(
  {
    type: AvatarTask,
    name: 'AvatarTaskConnection',
    description: "A page of the viewer's tasks, newest first.",
  },
  { name: 'AvatarTaskEdge', description: 'A task in a page, with its cursor.' },
);

const Viewer = builder.objectRef<{ id: string }>('Viewer').implement({
  description: 'The user the request is authenticated as.',
  fields: (t) => ({ id: t.exposeID('id', { description: "The user id: the token's sub." }) }),
});

export const MAX_PAGE_SIZE = 100;
export const DEFAULT_PAGE_SIZE = 20;

/** A global id of an AvatarTask → its local id; anything else → undefined (behaves as "no such task"). */
export function taskIdFromGlobalId(globalId: string): string | undefined {
  const { typename, id } = decodeGlobalIdOrNothing(globalId);
  return typename === 'AvatarTask' ? id : undefined;
}

const encodeCursor = (task: AvatarTaskRow) =>
  Buffer.from(`${task.createdAt.toISOString()}|${task.id}`, 'utf8').toString('base64url');

function decodeCursor(cursor: string): TaskCursor {
  const [createdAt, id] = Buffer.from(cursor, 'base64url').toString('utf8').split('|');
  const date = new Date(createdAt ?? '');
  if (!id || Number.isNaN(date.getTime())) {
    throw new GraphQLError('after is not a cursor from this connection', {
      extensions: { code: 'BAD_USER_INPUT', field: 'after' },
    });
  }
  return { createdAt: date, id };
}

builder.queryFields((t) => ({
  viewer: t.field({
    type: Viewer,
    description: 'Who you are.',
    resolve: (_root, _args, context) => ({ id: requireViewer(context).id }),
  }),
  avatarTask: t.field({
    type: AvatarTask,
    nullable: true,
    description: 'One of your tasks by id; null when it does not exist or is not yours.',
    args: { id: t.arg.id({ required: true, description: 'The task id (AvatarTask.id).' }) },
    resolve: async (_root, args, context) => {
      const viewer = requireViewer(context);
      const id = taskIdFromGlobalId(String(args.id));
      return id ? ((await context.repository.findForUser(viewer.id, id)) ?? null) : null;
    },
  }),
  avatarTasks: t.field({
    type: AvatarTaskConnection,
    description: `Your tasks, newest first (Relay connection; at most ${MAX_PAGE_SIZE} a page).`,
    args: {
      first: t.arg.int({ description: `Page size, 0 to ${MAX_PAGE_SIZE}; default ${DEFAULT_PAGE_SIZE}.` }),
      after: t.arg.string({ description: 'Cursor of the last edge of the previous page.' }),
      states: t.arg({ type: [AvatarTaskStateEnum], description: 'Only tasks in these states.' }),
    },
    resolve: async (_root, args, context) => {
      const viewer = requireViewer(context);
      if (args.first != null && args.first < 0) {
        throw new GraphQLError('first must not be negative', {
          extensions: { code: 'BAD_USER_INPUT', field: 'first' },
        });
      }
      const first = Math.min(MAX_PAGE_SIZE, args.first ?? DEFAULT_PAGE_SIZE);
      const page = await context.repository.listForUser(viewer.id, {
        first,
        after: args.after ? decodeCursor(args.after) : undefined,
        states: args.states ?? undefined,
      });
      const edges = page.tasks.map((task) => ({ node: task, cursor: encodeCursor(task) }));
      return {
        edges,
        pageInfo: {
          hasNextPage: page.hasNextPage,
          hasPreviousPage: Boolean(args.after),
          startCursor: edges[0]?.cursor ?? null,
          endCursor: edges.at(-1)?.cursor ?? null,
        },
      };
    },
  }),
}));

function notFound(): GraphQLError {
  return new GraphQLError('No such avatar task', { extensions: { code: 'NOT_FOUND' } });
}

async function subscribe(args: { id?: string | null; since?: Date | null }, context: GraphQLContext) {
  const viewer = requireViewer(context);
  if (args.id == null) return context.updates.watchUser(viewer.id, args.since ?? undefined);
  const id = taskIdFromGlobalId(args.id);
  if (!id) throw notFound();
  try {
    return await context.updates.watchTask(viewer.id, id);
  } catch (error) {
    throw error instanceof TaskNotFoundError ? notFound() : error;
  }
}

builder.subscriptionField('avatarTaskUpdated', (t) =>
  t.field({
    type: AvatarTask,
    description:
      'With id: the task as it is now, then every change, completing after SUCCEEDED, FAILED or CANCELED. Without id: every change to your tasks; with since, first each of your tasks changed after that instant, oldest first.',
    args: {
      id: t.arg.id({ description: 'One task to follow.' }),
      since: t.arg({ type: 'DateTime', description: 'Without id: replay tasks changed after this instant.' }),
    },
    subscribe: (_root, args, context) =>
      subscribe({ id: args.id == null ? null : String(args.id), since: args.since }, context),
    resolve: (task) => task,
  }),
);
