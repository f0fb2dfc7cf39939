import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CREATE_TASK, type CreateResult, sampleInput, signToken } from '../helpers/gateway.js';
import { type GatewayProcess, startGatewayProcess } from '../helpers/gateway-process.js';

/**
 * The compiled gateway (`npm run build`, then `node dist/main.js`, as the Docker image runs it) starts and
 * works: health, and a task created over GraphQL that the built-in simulator takes to SUCCEEDED. Run by
 * `npm run test:dist`, which builds first.
 */
describe('the built gateway, node dist/main.js', () => {
  let gateway: GatewayProcess;
  beforeAll(async () => {
    if (!existsSync(new URL('../../dist/main.js', import.meta.url))) {
      throw new Error('dist/main.js is missing: run `npm run test:dist`, which builds it first');
    }
    gateway = await startGatewayProcess({
      entry: 'build',
      env: { SIMULATOR_STEP_MS: '100', POLL_INTERVAL_MS: '100', CHECK_INPUT_URLS: 'false' },
    });
  }, 90_000);
  afterAll(() => gateway?.kill());

  it('answers /healthz and takes a task to SUCCEEDED on the built-in simulator', async () => {
    expect((await fetch(`${gateway.url}/healthz`, { signal: AbortSignal.timeout(5_000) })).status).toBe(200);
    const token = await signToken('dist-smoke');
    const graphql = async <T>(query: string, variables: Record<string, unknown>) => {
      const response = await fetch(gateway.graphqlUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ query, variables }),
        signal: AbortSignal.timeout(10_000),
      });
      return ((await response.json()) as { data: T }).data;
    };
    // The built-in simulator downloads a task's inputs, as kie does: its own sample files exist.
    const input = sampleInput({
      imageUrl: `${gateway.url}/simulator/samples/face.png`,
      audioUrl: `${gateway.url}/simulator/samples/voice.wav`,
    });
    const created = await graphql<{ createAvatarTask: CreateResult }>(CREATE_TASK, { input });
    expect(created.createAvatarTask.__typename).toBe('CreateAvatarTaskSuccess');
    const id = 'task' in created.createAvatarTask ? created.createAvatarTask.task.id : '';
    await expect
      .poll(
        async () =>
          (
            await graphql<{ avatarTask: { state: string } }>(
              'query ($id: ID!) { avatarTask(id: $id) { state } }',
              { id },
            )
          ).avatarTask.state,
        { timeout: 30_000, interval: 200 },
      )
      .toBe('SUCCEEDED');
  }, 60_000);
});
