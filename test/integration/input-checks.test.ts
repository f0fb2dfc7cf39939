import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { databaseKinds, useTestDatabase } from '../helpers/database.js';
import { createTask, startTestGateway, type TestGateway, waitForState } from '../helpers/gateway.js';
import { type MediaServer, startMediaServer } from '../helpers/media.js';

describe.each(databaseKinds())('URL inputs checked before paying, on %s', (kind) => {
  const database = useTestDatabase(kind);
  let kie: SimulatorServer;
  let media: MediaServer;
  let gateway: TestGateway;
  /** The same gateway's check, with the SSRF guard on as in production. */
  let guarded: TestGateway;

  beforeAll(async () => {
    kie = await startSimulatorServer({ knobs: { stepMs: 50, checkInputUrls: true } });
    media = await startMediaServer();
    // Development's defaults: checked, private addresses allowed (the media server is on loopback).
    gateway = await startTestGateway({ database, kieUrl: kie.url, env: { CHECK_INPUT_URLS: 'true' } });
    guarded = await startTestGateway({
      database,
      kieUrl: kie.url,
      env: { CHECK_INPUT_URLS: 'true', ALLOW_PRIVATE_INPUT_URLS: 'false' },
    });
  });
  afterAll(async () => {
    await guarded?.stop();
    await gateway?.stop();
    await media?.close();
    await kie?.close();
  });

  it.each([
    ['PRO', 48],
    ['STANDARD', 24],
  ])('reads the 3 s recording at a URL and estimates a %s task at %s credits', async (model, credits) => {
    const before = kie.simulator.stats.creates;
    // A server that ignores ranges (the media server) and one that honours them (the simulator's samples).
    for (const audioUrl of [`${media.url}/voice.wav`, `${kie.url}/samples/voice.wav`]) {
      const result = await createTask(gateway, { imageUrl: `${media.url}/moved`, audioUrl, model });
      expect(result.__typename).toBe('CreateAvatarTaskSuccess');
      if (!('task' in result)) return;
      expect(result.task.estimatedCredits).toBe(credits);
      expect(result.task.imageUrl).toBe(`${media.url}/moved`);
      await waitForState(gateway, result.task.id, 'SUCCEEDED');
    }
    expect(kie.simulator.stats.creates - before).toBe(2);
  });

  it.each([
    [
      'audioUrl',
      'that 404s',
      { audioUrl: '/missing.mp3' },
      /could not be downloaded: the server answered HTTP 404/,
    ],
    [
      'imageUrl',
      'that is HTML',
      { imageUrl: '/page.html' },
      /must be a JPEG, PNG or WebP image, but its content is of no media type/,
    ],
    ['imageUrl', 'over 10 MB', { imageUrl: '/big.png' }, /is 11\.0 MB, over the 10\.0 MB limit/],
    [
      'audioUrl',
      'that is an image',
      { audioUrl: '/face.png' },
      /must be an mp3, wav, aac, m4a or ogg recording, but its content is a image\/png file/,
    ],
  ] as Array<[string, string, { imageUrl?: string; audioUrl?: string }, RegExp]>)(
    'refuses an %s %s with INVALID_INPUT and never calls kie',
    async (field, _what, paths, reason) => {
      const before = kie.simulator.stats.createRequests;
      const input = {
        imageUrl: `${media.url}${paths.imageUrl ?? '/face.png'}`,
        audioUrl: `${media.url}${paths.audioUrl ?? '/voice.wav'}`,
      };
      const result = await createTask(gateway, input, 'careless');
      expect(result).toMatchObject({ __typename: 'InvalidInputError', code: 'INVALID_INPUT', field });
      expect('message' in result && result.message).toMatch(reason);
      expect('message' in result && result.message).toMatch(new RegExp(`^${field} `));
      expect(kie.simulator.stats.createRequests).toBe(before);
    },
  );

  it('refuses a host that does not resolve', async () => {
    const before = kie.simulator.stats.createRequests;
    const result = await createTask(gateway, {
      imageUrl: 'http://no-such-host.invalid/face.png',
      audioUrl: `${media.url}/voice.wav`,
    });
    expect(result).toMatchObject({ code: 'INVALID_INPUT', field: 'imageUrl' });
    expect('message' in result && result.message).toMatch(/could not be reached \(no-such-host\.invalid/);
    expect(kie.simulator.stats.createRequests).toBe(before);
  });

  it('with the guard on, refuses URLs that point at 127.0.0.1 or another private address, fetching nothing', async () => {
    const before = { creates: kie.simulator.stats.createRequests, hits: media.hits.length };
    const port = new URL(media.url).port;
    for (const imageUrl of [
      `http://127.0.0.1:${port}/face.png`,
      `http://localhost:${port}/face.png`,
      `http://[::ffff:127.0.0.1]:${port}/face.png`,
      'http://169.254.169.254/latest/meta-data/',
      'http://10.0.0.1/face.png',
    ]) {
      const result = await createTask(guarded, { imageUrl, audioUrl: `${media.url}/voice.wav` }, 'attacker');
      expect(result).toMatchObject({ code: 'INVALID_INPUT', field: 'imageUrl' });
      expect('message' in result && result.message).toMatch(/non-public address/);
    }
    expect(media.hits.length).toBe(before.hits);
    expect(kie.simulator.stats.createRequests).toBe(before.creates);
  });

  it('with the check off, sends the URLs as given: kie then fails the task whose audio is gone', async () => {
    const unchecked = await startTestGateway({
      database,
      kieUrl: kie.url,
      env: { CHECK_INPUT_URLS: 'false' },
    });
    try {
      const before = media.hits.length;
      const result = await createTask(unchecked, {
        imageUrl: `${media.url}/face.png`,
        audioUrl: `${media.url}/gone.wav`,
      });
      if (!('task' in result)) throw new Error(JSON.stringify(result));
      expect(result.task.estimatedCredits).toBeNull();
      const failed = await waitForState(unchecked, result.task.id, 'FAILED');
      expect(failed.failure).toMatchObject({ code: 'GENERATION_FAILED' });
      expect(failed.failure?.message).toMatch(/audio_url could not be downloaded .*HTTP 404/);
      // Only kie (the simulator) fetched them.
      expect(media.hits.slice(before).sort()).toEqual(['/face.png', '/gone.wav']);
    } finally {
      await unchecked.stop();
    }
  });
});
