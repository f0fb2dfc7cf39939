import { existsSync } from 'node:fs';
import { mkdtemp, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type Browser, chromium, type Locator } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningApp, startApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import type { DatabaseHandle } from '../../src/db/connection.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

const CHROMIUM = '/usr/bin/chromium';

/** What an element shows, with Monaco's non-breaking spaces and line breaks folded to single spaces. */
const text = async (locator: Locator) => ((await locator.textContent()) ?? '').replace(/\s+/g, ' ').trim();
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) {
  console.warn(
    `GraphiQL browser test skipped: ${CHROMIUM} not found (install it: apt-get install -y chromium)`,
  );
}

/** What a developer does after `npm start`: open GraphiQL, type a subscription, run it, watch it update. */
describe.skipIf(!hasChromium)('GraphiQL in Chromium, development mode', () => {
  let database: TestDatabase;
  let handle: DatabaseHandle;
  let app: RunningApp;
  let browser: Browser;
  let screenshots: string;

  beforeAll(async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'avatar-gateway-e2e-'));
    screenshots = await mkdtemp(path.join(tmpdir(), 'avatar-gateway-screenshots-'));
    database = await createTestDatabase('pglite');
    handle = await database.open();
    const config = loadConfig({
      NODE_ENV: 'development',
      PORT: '0',
      HOST: '127.0.0.1',
      DATA_DIR: dataDir,
      // Slow enough that the browser sees the task before it finishes, so the update it shows is live.
      SIMULATOR_STEP_MS: '1000',
      LOG_LEVEL: 'silent',
    });
    app = await startApp(config, { database: handle });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  });
  afterAll(async () => {
    await browser?.close();
    await app?.stop();
    await handle?.close();
    await database?.dispose();
  });

  it('arrives compressed and draws a fresh idempotency key on every load, also over the tabs it kept', async () => {
    const context = await browser.newContext();
    const shownKey = async () => {
      const page = await context.newPage();
      const response = await page.goto(app.graphqlUrl, { waitUntil: 'load' });
      // Chromium accepts gzip, deflate, br and zstd: the page, megabytes of script, comes as brotli.
      expect(response?.headers()['content-encoding']).toBe('br');
      await page.locator('.graphiql-query-editor .monaco-editor').waitFor({ timeout: 20_000 });
      // A later load restores the tabs GraphiQL kept (and opens an empty one): the walkthrough is its own tab.
      let key: string | undefined;
      await expect
        .poll(
          async () => {
            // Clicked on every try: GraphiQL restores its tabs after the editor appears, and a click that
            // lands while it does so leaves the editor on another tab.
            await page.locator('.graphiql-tab', { hasText: 'CreateTask' }).first().click();
            key = /walkthrough-[0-9a-f]{32}/.exec(await text(page.locator('.graphiql-query-editor')))?.[0];
            return key;
          },
          { timeout: 20_000, interval: 100 },
        )
        .toBeTruthy();
      await page.close();
      return key;
    };
    const first = await shownKey();
    // The second load restores GraphiQL's stored tabs, the walkthrough with the first key among them.
    const second = await shownKey();
    expect(second).not.toBe(first);
    await context.close();
  });

  it('runs a typed avatarTaskUpdated subscription and shows SUCCEEDED arrive', async () => {
    const page = await browser.newPage();
    const requests: string[] = [];
    page.on('request', (request) => requests.push(request.url()));

    await page.goto(app.graphqlUrl, { waitUntil: 'load' });
    const editor = page.locator('.graphiql-query-editor .monaco-editor');
    await editor.waitFor({ timeout: 20_000 });
    // The development token is already in the Headers tab.
    await expect
      .poll(async () => text(page.locator('.graphiql-editor-tool')))
      .toMatch(/"Authorization": "Bearer ey/);

    const created = await fetch(app.graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${app.developmentToken}` },
      body: JSON.stringify({
        // The simulator's samples: development checks URL inputs before submit, as production does.
        query: `mutation { createAvatarTask(input: { imageUrl: "${app.url}/simulator/samples/face.png",
          audioUrl: "${app.url}/simulator/samples/voice.wav" }) { ... on CreateAvatarTaskSuccess { task { id } } } }`,
      }),
    });
    const id = ((await created.json()) as { data: { createAvatarTask: { task: { id: string } } } }).data
      .createAvatarTask.task.id;

    // Monaco auto-closes brackets and quotes on key presses; inserted text arrives as typed, unchanged.
    await editor.click();
    await page.keyboard.press('Control+A');
    await page.keyboard.press('Delete');
    await page.keyboard.insertText(`subscription Watch { avatarTaskUpdated(id: "${id}") { state version } }`);
    // GraphiQL takes in an edit after a short debounce; run before that and it would run the old document.
    await expect.poll(async () => text(page.locator('.graphiql-tab-active'))).toBe('Watch');
    await page.locator('.graphiql-execute-button').click();

    const shown: string[] = [];
    await expect
      .poll(
        async () => {
          const response = await text(page.locator('.graphiql-response'));
          if (response && response !== shown.at(-1)) shown.push(response);
          return response;
        },
        { timeout: 15_000, interval: 50 },
      )
      .toMatch(/"state": "SUCCEEDED", "version": \d+/);
    // It showed the task before it finished, then replaced it with the update: a live subscription.
    expect(shown[0]).toMatch(/"state": "(WAITING|QUEUING|GENERATING)"/);
    expect(shown.at(-1)).not.toMatch(/errors/);

    const file = path.join(screenshots, 'graphiql-subscription.png');
    await page.screenshot({ path: file });
    expect((await stat(file)).size).toBeGreaterThan(0);
    // GraphiQL's scripts are served by the gateway itself: nothing came from a CDN.
    const foreign = requests.filter((url) => !/^(https?:\/\/127\.0\.0\.1:\d+\/|data:|blob:)/.test(url));
    expect(foreign).toEqual([]);
    await page.close();
  });
});
