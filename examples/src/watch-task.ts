/**
 * Creates a task, watches it live until it SUCCEEDED, then pages through the viewer's history and finds it
 * there. Exits non-zero on any failure: an error member, a FAILED task, a missing update, or the deadline.
 *
 *   GATEWAY_URL=http://localhost:4000/graphql TOKEN=$(npm run -s token -- alice) npm start
 *
 * IMAGE_URL, AUDIO_URL and PROMPT set the input (with the built-in simulator, a prompt containing `[fail]`
 * makes the task fail); DEADLINE_MS bounds the whole run.
 */
import { randomUUID } from 'node:crypto';
import { filter, firstValueFrom } from 'rxjs';
import { createGatewayClient, type GatewayClient } from './client.js';
import type { AvatarTaskErrorCode, AvatarTaskState } from './gql/graphql.js';
import { graphql } from './gql/index.js';

const CreateTask = graphql(`
  mutation CreateTask($input: CreateAvatarTaskInput!) {
    createAvatarTask(input: $input) {
      __typename
      ... on CreateAvatarTaskSuccess { task { id state version } }
      ... on Error { code message }
      ... on InvalidInputError { field }
      ... on RateLimitedError { retryAfterSeconds }
    }
  }
`);

const WatchTask = graphql(`
  subscription WatchTask($id: ID!) {
    avatarTaskUpdated(id: $id) { id state version videoUrl failure { code message } }
  }
`);

const TaskHistory = graphql(`
  query TaskHistory($first: Int!, $after: String) {
    avatarTasks(first: $first, after: $after) {
      edges { node { id state createdAt } }
      pageInfo { hasNextPage endCursor }
    }
  }
`);

/** One page of the viewer's tasks, newest first, read from the gateway rather than the cache. */
async function historyPage(apollo: GatewayClient['apollo'], after: string | undefined) {
  const page = await apollo.query({
    query: TaskHistory,
    variables: { first: 2, after },
    fetchPolicy: 'network-only',
  });
  if (!page.data) throw new Error('avatarTasks returned no data');
  return page.data.avatarTasks;
}

const graphqlUrl = process.env.GATEWAY_URL ?? 'http://localhost:4000/graphql';
const token = process.env.TOKEN;
const deadlineMs = Number(process.env.DEADLINE_MS ?? 120_000);

/** What a person should read for each create error; the compiler checks that every code is handled. */
function explain(code: AvatarTaskErrorCode): string {
  switch (code) {
    case 'INVALID_INPUT':
      return 'fix the input field named';
    case 'IDEMPOTENCY_KEY_REUSED':
      return 'use a fresh idempotency key for a different input';
    case 'INSUFFICIENT_CREDITS':
      return 'top up the kie.ai account';
    case 'QUOTA_EXCEEDED':
    case 'RATE_LIMITED':
      return 'back off and retry later';
    case 'UPSTREAM_REJECTED':
    case 'UPSTREAM_UNAVAILABLE':
      return 'kie.ai did not take the task';
    // The codes cancelAvatarTask answers with.
    case 'NOT_FOUND':
      return 'no such task of yours';
    case 'ALREADY_SUBMITTED':
      return 'kie.ai has the task already';
  }
}

async function main(): Promise<void> {
  if (!token) throw new Error('set TOKEN to a gateway token (npm run -s token -- <user> in the gateway)');
  const { apollo, close } = createGatewayClient(graphqlUrl, token);
  try {
    const created = await apollo.mutate({
      mutation: CreateTask,
      variables: {
        input: {
          imageUrl: process.env.IMAGE_URL ?? 'https://example.com/face.png',
          audioUrl: process.env.AUDIO_URL ?? 'https://example.com/voice.mp3',
          prompt: process.env.PROMPT ?? 'A friendly presenter, looking at the camera',
          // Fresh per run: the same key returns the task it made before, already finished.
          idempotencyKey: randomUUID(),
        },
      },
    });
    const result = created.data?.createAvatarTask;
    if (!result) throw new Error('createAvatarTask returned no data');
    if (result.__typename !== 'CreateAvatarTaskSuccess') {
      // Every other member implements Error; possibleTypes is what makes Apollo's cache keep these fields.
      throw new Error(`${result.__typename} ${result.code}: ${result.message} (${explain(result.code)})`);
    }
    const { task } = result;
    console.log(`created ${task.id} in state ${task.state}`);

    const states: AvatarTaskState[] = [];
    const updates = apollo.subscribe({ query: WatchTask, variables: { id: task.id } });
    const final = await firstValueFrom(
      updates.pipe(
        filter((update) => {
          if (update.error) throw update.error;
          const seen = update.data?.avatarTaskUpdated;
          if (!seen) return false;
          if (states.at(-1) !== seen.state) {
            states.push(seen.state);
            console.log(`  v${seen.version} ${seen.state}`);
          }
          return seen.state === 'SUCCEEDED' || seen.state === 'FAILED';
        }),
      ),
    );
    const finished = final.data?.avatarTaskUpdated;
    if (finished?.state !== 'SUCCEEDED') {
      throw new Error(
        `the task ended ${finished?.state}: ${finished?.failure?.code} ${finished?.failure?.message}`,
      );
    }
    if (!finished.videoUrl) throw new Error('SUCCEEDED without a videoUrl');
    console.log(`video: ${finished.videoUrl} (states seen: ${states.join(' → ')})`);

    let after: string | undefined;
    let found = false;
    let pages = 0;
    do {
      const connection = await historyPage(apollo, after);
      pages++;
      found ||= connection.edges.some((edge) => edge.node.id === task.id && edge.node.state === 'SUCCEEDED');
      after = connection.pageInfo.hasNextPage ? (connection.pageInfo.endCursor ?? undefined) : undefined;
    } while (after && pages < 100);
    if (!found) throw new Error(`the task is not in the history (${pages} pages read)`);
    console.log(`history: ${pages} page(s), the task among them`);
  } finally {
    await close();
  }
}

const deadline = setTimeout(() => {
  console.error(`not done within ${deadlineMs} ms`);
  process.exit(1);
}, deadlineMs);

main().then(
  () => {
    clearTimeout(deadline);
    console.log('ok');
  },
  (error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  },
);
