import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { databaseKinds, useTestDatabase } from '../helpers/database.js';
import {
  CREATE_TASK,
  type CreateResult,
  createTaskWithUploads,
  getTask,
  postMultipart,
  sampleInput,
  signToken,
  startTestGateway,
  type TaskView,
  type TestGateway,
  waitForState,
} from '../helpers/gateway.js';
import { facePart, fixtures, pngOfSize, voicePart } from '../helpers/media.js';

function expectTask(result: CreateResult): TaskView {
  if (!('task' in result)) throw new Error(`expected a task, got ${JSON.stringify(result)}`);
  return result.task;
}

// Room for the 11 MB image (refused by its own limit, not the request's) but not for much more.
const MAX_UPLOAD_REQUEST_BYTES = 15_000_000;

describe.each(databaseKinds())('uploads on %s', (kind) => {
  const database = useTestDatabase(kind);
  let kie: SimulatorServer;
  let gateway: TestGateway;

  beforeAll(async () => {
    // kie's tasks download their inputs here, so an upload the simulator does not serve would fail the task.
    kie = await startSimulatorServer({ knobs: { stepMs: 50, checkInputUrls: true } });
    gateway = await startTestGateway({
      database,
      kieUrl: kie.url,
      env: { MAX_UPLOAD_REQUEST_BYTES: String(MAX_UPLOAD_REQUEST_BYTES) },
    });
  });
  afterAll(async () => {
    await gateway?.stop();
    await kie?.close();
  });

  it('takes a real image and recording in a multipart create, uploads them to kie and reaches SUCCEEDED', async () => {
    const before = { ...kie.simulator.stats };
    const task = expectTask(
      await createTaskWithUploads(gateway, { image: facePart(), audio: voicePart() }, {}, 'uploader'),
    );
    expect(task.state).toBe('WAITING');
    expect(kie.simulator.stats.uploads - before.uploads).toBe(2);
    expect(kie.simulator.stats.creates - before.creates).toBe(1);
    // The task went to kie with the URLs kie's file store gave, which serve the very bytes sent.
    expect(task.imageUrl).toMatch(new RegExp(`^${kie.url}/files/avatar-gateway/[0-9a-f-]{36}\\.png$`));
    expect(task.audioUrl).toMatch(/\/files\/avatar-gateway\/[0-9a-f-]{36}\.wav$/);
    const served = await fetch(task.audioUrl as string);
    expect(new Uint8Array(await served.arrayBuffer())).toEqual(fixtures.voice3s);
    // 3 seconds of audio at PRO's 16 credits a second.
    expect(task.estimatedCredits).toBe(48);

    const done = await waitForState(gateway, task.id, 'SUCCEEDED', 'uploader');
    // kie's own link or, once the copier has stored it, a signed link to the copy: either serves the video.
    const video = await fetch(done.videoUrl as string);
    expect(video.status).toBe(200);
    expect(video.headers.get('content-type')).toMatch(/^video\/mp4/);
    expect((await video.arrayBuffer()).byteLength).toBeGreaterThan(0);
  });

  it('estimates a STANDARD task at 8 credits a second', async () => {
    const task = expectTask(
      await createTaskWithUploads(gateway, { image: facePart(), audio: voicePart() }, { model: 'STANDARD' }),
    );
    expect(task.estimatedCredits).toBe(24);
  });

  it('mixes an upload with a URL input', async () => {
    const task = expectTask(
      await createTaskWithUploads(
        gateway,
        { audio: voicePart() },
        { imageUrl: `${kie.url}/samples/face.png` },
      ),
    );
    expect(task.imageUrl).toBe(`${kie.url}/samples/face.png`);
    expect(task.estimatedCredits).toBe(48);
    await waitForState(gateway, task.id, 'SUCCEEDED');
  });

  it('returns the same task for the same key and the same bytes, uploading nothing twice', async () => {
    const input = { idempotencyKey: 'upload-once' };
    const first = expectTask(
      await createTaskWithUploads(gateway, { image: facePart(), audio: voicePart() }, input),
    );
    const before = { ...kie.simulator.stats };
    // The same bytes under other names and types are the same input.
    const again = expectTask(
      await createTaskWithUploads(
        gateway,
        { image: { ...facePart(), fileName: 'other.png' }, audio: { ...voicePart(), type: 'audio/x-wav' } },
        input,
      ),
    );
    expect(again.id).toBe(first.id);
    expect(kie.simulator.stats.uploads).toBe(before.uploads);
    expect(kie.simulator.stats.createRequests).toBe(before.createRequests);

    const otherBytes = new Uint8Array(fixtures.voice3s);
    otherBytes.set([otherBytes.at(-1) === 1 ? 2 : 1], otherBytes.length - 1); // one sample differs
    const reused = await createTaskWithUploads(
      gateway,
      { image: facePart(), audio: { ...voicePart(), bytes: otherBytes } },
      input,
    );
    expect(reused).toMatchObject({ code: 'IDEMPOTENCY_KEY_REUSED' });
    expect(kie.simulator.stats.uploads).toBe(before.uploads);
  });

  it.each([
    [
      'a PNG renamed .mp3',
      'audio',
      { bytes: fixtures.face, fileName: 'voice.mp3', type: 'audio/mpeg' },
      /image\/png/,
    ],
    [
      'an 11 MB image',
      'image',
      { bytes: pngOfSize(11_000_000), fileName: 'face.png', type: 'image/png' },
      /11\.0 MB, over the 10\.0 MB limit/,
    ],
    [
      'a text file',
      'image',
      { bytes: fixtures.text, fileName: 'face.jpg', type: 'image/jpeg' },
      /no media type/,
    ],
    [
      'a recording as the image',
      'image',
      { bytes: fixtures.voice3s, fileName: 'face.png', type: 'image/png' },
      /audio\/wav/,
    ],
  ] as const)(
    'refuses %s with INVALID_INPUT naming %s, and uploads and sends nothing',
    async (_what, field, part, reason) => {
      const user = `bad-upload-${field}-${part.bytes.byteLength}`;
      const before = { ...kie.simulator.stats };
      const files =
        field === 'image' ? { image: part, audio: voicePart() } : { image: facePart(), audio: part };
      const result = await createTaskWithUploads(gateway, files, {}, user);
      expect(result).toMatchObject({ __typename: 'InvalidInputError', code: 'INVALID_INPUT', field });
      expect('message' in result && result.message).toMatch(reason);
      expect(kie.simulator.stats.uploads).toBe(before.uploads);
      expect(kie.simulator.stats.createRequests).toBe(before.createRequests);
      const history = await gateway.gql<{ avatarTasks: { edges: unknown[] } }>(
        'query { avatarTasks(first: 5) { edges { node { id } } } }',
        {},
        user,
      );
      expect(history.data?.avatarTasks.edges).toEqual([]);
    },
  );

  it('wants exactly one of image and imageUrl, and of audio and audioUrl', async () => {
    const both = await createTaskWithUploads(
      gateway,
      { image: facePart(), audio: voicePart() },
      sampleInput(),
    );
    expect(both).toMatchObject({ code: 'INVALID_INPUT', field: 'image' });
    const neither = await createTaskWithUploads(gateway, { image: facePart() }, {});
    expect(neither).toMatchObject({ code: 'INVALID_INPUT', field: 'audioUrl' });
  });

  it('refuses a multipart body over MAX_UPLOAD_REQUEST_BYTES with 413, by Content-Length and while streaming', async () => {
    const before = { ...kie.simulator.stats };
    const big = { bytes: pngOfSize(MAX_UPLOAD_REQUEST_BYTES + 1), fileName: 'face.png', type: 'image/png' };
    const declared = await postMultipart(
      gateway,
      { query: CREATE_TASK, variables: { input: { image: null, audioUrl: sampleInput().audioUrl } } },
      { 'variables.input.image': big },
    );
    expect(declared.status).toBe(413);
    expect(await declared.json()).toMatchObject({
      errors: [{ extensions: { code: 'REQUEST_ENTITY_TOO_LARGE' } }],
    });

    // Chunked, without a Content-Length: counted as it arrives.
    const boundary = 'x-boundary';
    const head = new TextEncoder().encode(
      `--${boundary}\r\ncontent-disposition: form-data; name="operations"\r\n\r\n${JSON.stringify({
        query: CREATE_TASK,
        variables: { input: { image: null, audioUrl: sampleInput().audioUrl } },
      })}\r\n--${boundary}\r\ncontent-disposition: form-data; name="map"\r\n\r\n{"0":["variables.input.image"]}\r\n--${boundary}\r\ncontent-disposition: form-data; name="0"; filename="face.png"\r\ncontent-type: image/png\r\n\r\n`,
    );
    const chunk = new Uint8Array(1_000_000);
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(head);
      },
      pull(controller) {
        sent += chunk.byteLength;
        if (sent > 3 * MAX_UPLOAD_REQUEST_BYTES) controller.close();
        else controller.enqueue(chunk);
      },
    });
    const streamed = await fetch(gateway.graphqlUrl, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${await signToken('alice')}`,
        'content-type': `multipart/form-data; boundary=${boundary}`,
      },
      body,
      duplex: 'half',
    } as RequestInit);
    expect(streamed.status).toBe(413);
    expect(sent).toBeLessThan(2 * MAX_UPLOAD_REQUEST_BYTES);
    expect(kie.simulator.stats.uploads).toBe(before.uploads);
  });

  it('holds the operation inside a multipart request to every document limit', async () => {
    const before = { ...kie.simulator.stats };
    const aliases = Array.from({ length: 31 }, (_, index) => `a${index}: id`).join(' ');
    const response = await postMultipart(
      gateway,
      {
        query: `mutation ($input: CreateAvatarTaskInput!) { createAvatarTask(input: $input) { ... on CreateAvatarTaskSuccess { task { ${aliases} } } } }`,
        variables: { input: { image: null, audioUrl: sampleInput().audioUrl } },
      },
      { 'variables.input.image': facePart() },
    );
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({
      errors: [{ extensions: { code: 'QUERY_LIMIT_EXCEEDED', limit: 'MAX_QUERY_ALIASES' } }],
    });
    expect(kie.simulator.stats.uploads).toBe(before.uploads);
  });

  it('refuses an upload without a token, before reading it', async () => {
    const before = { ...kie.simulator.stats };
    const response = await postMultipart(
      gateway,
      { query: CREATE_TASK, variables: { input: { image: null, audio: null } } },
      { 'variables.input.image': facePart(), 'variables.input.audio': voicePart() },
      null,
    );
    const result = (await response.json()) as { errors?: Array<{ extensions?: { code?: string } }> };
    expect(result.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    expect(kie.simulator.stats.uploads).toBe(before.uploads);
  });

  it('fails a task whose uploaded file kie no longer has, as kie would', async () => {
    // The gateway checks nothing here (CHECK_INPUT_URLS is off in the test gateway): kie finds the file gone.
    const task = expectTask(
      await createTaskWithUploads(
        gateway,
        { audio: voicePart() },
        { imageUrl: `${kie.url}/files/avatar-gateway/expired.png` },
        'late-uploader',
      ),
    );
    const failed = await waitForState(gateway, task.id, 'FAILED', 'late-uploader');
    expect(failed.failure?.code).toBe('GENERATION_FAILED');
    expect(failed.failure?.message).toContain('image_url could not be downloaded');
    expect((await getTask(gateway, task.id, 'late-uploader'))?.state).toBe('FAILED');
  });
});
