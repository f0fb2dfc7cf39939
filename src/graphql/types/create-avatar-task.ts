import { builder } from '../builder.js';
import { requireViewer } from '../context.js';
import { AvatarModelEnum, AvatarTask } from './avatar-task.js';
import { createAvatarTaskErrors } from './errors.js';

const CreateAvatarTaskInput = builder.inputType('CreateAvatarTaskInput', {
  description: 'A face image and a voice recording to turn into a talking-avatar video.',
  fields: (t) => ({
    imageUrl: t.string({
      description:
        'Public http(s) URL of a JPEG, PNG or WebP face image (at most 10 MB), at most 2048 characters. It is fetched once to check it before anything is paid. Give this or image.',
    }),
    audioUrl: t.string({
      description:
        'Public http(s) URL of the voice recording (mp3, wav, aac, m4a, ogg; at most 10 MB); the video is as long. Checked like imageUrl, and its duration gives estimatedCredits. Give this or audio.',
    }),
    image: t.field({
      type: 'File',
      description:
        'The face image itself, as a file of a multipart request (JPEG, PNG or WebP by its bytes, at most 10 MB), instead of imageUrl.',
    }),
    audio: t.field({
      type: 'File',
      description:
        'The voice recording itself, as a file of a multipart request (mp3, wav, aac, m4a or ogg by its bytes, at most 10 MB), instead of audioUrl.',
    }),
    prompt: t.string({ description: 'Optional guidance for the animation, at most 5000 characters.' }),
    model: t.field({
      type: AvatarModelEnum,
      defaultValue: 'PRO',
      description: 'Which model renders the video.',
    }),
    idempotencyKey: t.string({
      description:
        'Your key for this request, at most 255 characters: repeating it with the same input returns the same task and pays nothing twice.',
    }),
  }),
});

builder.mutationField('createAvatarTask', (t) =>
  t.field({
    type: AvatarTask,
    description:
      "Stores a task and submits it to kie.ai once. Expected failures come back as error members with stable codes. Beyond kie.ai's account limits, or while kie.ai is briefly unavailable, the task stays PENDING in a queue that serves users in fair turns, and is submitted as soon as a slot frees.",
    args: { input: t.arg({ type: CreateAvatarTaskInput, required: true }) },
    errors: {
      types: createAvatarTaskErrors,
      union: { name: 'CreateAvatarTaskResult', description: 'The created task, or why it was not created.' },
      result: {
        name: 'CreateAvatarTaskSuccess',
        description: 'The task was stored (and, normally, submitted).',
      },
      dataField: { name: 'task', description: 'The task; PENDING if kie.ai has not acknowledged it yet.' },
    },
    resolve: (_root, { input }, context) => context.tasks.create(requireViewer(context).id, input),
  }),
);
