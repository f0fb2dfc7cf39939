import { AlreadySubmittedError, TaskNotFoundError } from '../../tasks/errors.js';
import { builder } from '../builder.js';
import { requireViewer } from '../context.js';
import { AvatarTask, taskIdFromGlobalId } from './avatar-task.js';
import { ErrorInterface } from './errors.js';

builder.objectType(AlreadySubmittedError, {
  name: 'AlreadySubmittedError',
  description:
    'kie.ai has the task, or may have it (code ALREADY_SUBMITTED). kie.ai has no cancel: the render and its billing go on.',
  interfaces: [ErrorInterface],
  isTypeOf: (value) => value instanceof AlreadySubmittedError,
  fields: (t) => ({
    task: t.field({
      type: AvatarTask,
      description: 'The task as it is now.',
      resolve: (error) => error.task,
    }),
  }),
});

builder.mutationField('cancelAvatarTask', (t) =>
  t.field({
    type: AvatarTask,
    description:
      'Cancels a task kie.ai has not got yet (PENDING: queued, or waiting to be retried): it ends CANCELED and is never sent. A task kie.ai has (or is being sent to it) is ALREADY_SUBMITTED; a task that is already CANCELED, or ended FAILED before kie.ai got it, is returned as it is.',
    args: { id: t.arg.id({ required: true, description: 'The task id (AvatarTask.id).' }) },
    errors: {
      types: [TaskNotFoundError, AlreadySubmittedError],
      union: {
        name: 'CancelAvatarTaskResult',
        description: 'The canceled task, or why it was not canceled.',
      },
      result: { name: 'CancelAvatarTaskSuccess', description: 'The task will never be sent to kie.ai.' },
      dataField: { name: 'task', description: 'The task: CANCELED, or ended before kie.ai got it.' },
    },
    resolve: (_root, args, context) => {
      const viewer = requireViewer(context);
      const id = taskIdFromGlobalId(String(args.id));
      if (!id) throw new TaskNotFoundError();
      return context.tasks.cancel(viewer.id, id);
    },
  }),
);
