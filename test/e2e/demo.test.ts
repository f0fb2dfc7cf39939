import { existsSync } from 'node:fs';
import { mkdtemp, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningApp, startApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import type { DatabaseHandle } from '../../src/db/connection.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startProductionGateway } from '../security/production-gateway.js';

const CHROMIUM = '/usr/bin/chromium';
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) {
  console.warn(
    `Demo page browser test skipped: ${CHROMIUM} not found (install it: apt-get install -y chromium)`,
  );
}
/** The README shows what this test saw. */
const SCREENSHOT = fileURLToPath(new URL('../../assets/demo.png', import.meta.url));

/** What a newcomer does after `npm start`: open /demo, sign in, create a task, watch it, play it, see it listed. */
describe.skipIf(!hasChromium)('the /demo page in Chromium, development mode', () => {
  let database: TestDatabase;
  let handle: DatabaseHandle;
  let app: RunningApp;
  let browser: Browser;

  beforeAll(async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'avatar-gateway-demo-'));
    database = await createTestDatabase('pglite');
    handle = await database.open();
    const config = loadConfig({
      NODE_ENV: 'development',
      PORT: '0',
      HOST: '127.0.0.1',
      DATA_DIR: dataDir,
      // Each of kie's states lasts long enough for a watched task's polls to see it.
      SIMULATOR_STEP_MS: '1500',
      POLL_INTERVAL_MS: '100',
      WATCHED_POLL_INTERVAL_MS: '300',
      LOG_LEVEL: 'silent',
    });
    app = await startApp(config, { database: handle });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--no-first-run',
        '--disable-background-networking',
      ],
    });
  });
  afterAll(async () => {
    await browser?.close();
    await app?.stop();
    await handle?.close();
    await database?.dispose();
  });

  it('signs in, creates a task, streams its states live, plays the video and lists it, under its own CSP', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const requests: string[] = [];
    const problems: string[] = [];
    page.on('request', (request) => requests.push(request.url()));
    page.on('pageerror', (error) => problems.push(error.message));
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(message.text());
    });

    const response = await page.goto(`${app.url}/demo`, { waitUntil: 'load' });
    const csp = response?.headers()['content-security-policy'] ?? '';
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toContain('unsafe-inline');

    await page.getByRole('button', { name: 'Get a development token' }).click();
    await expect.poll(() => page.locator('#viewer').textContent()).toBe('Signed in as demo.');
    expect(await page.locator('#token').inputValue()).toMatch(/^ey/);

    await page.getByRole('button', { name: 'Create and watch' }).click();
    const states = page.locator('#states li');
    await expect
      .poll(
        async () =>
          await states
            .last()
            .getAttribute('data-state', { timeout: 1_000 })
            .catch(() => null),
        {
          timeout: 20_000,
          interval: 100,
        },
      )
      .toBe('SUCCEEDED');
    expect(
      await states.evaluateAll((items) => items.map((item) => (item as HTMLElement).dataset.state)),
    ).toEqual(['WAITING', 'QUEUING', 'GENERATING', 'SUCCEEDED']);

    // The result plays: the simulator's MP4 loads, and time moves once it is started.
    const video = page.locator('#video');
    await expect.poll(() => video.isVisible()).toBe(true);
    await expect
      .poll(() => video.evaluate((element) => (element as HTMLVideoElement).readyState), { timeout: 10_000 })
      .toBeGreaterThanOrEqual(2);
    await video.evaluate((element) => (element as HTMLVideoElement).play());
    await expect
      .poll(() => video.evaluate((element) => (element as HTMLVideoElement).currentTime), { timeout: 10_000 })
      .toBeGreaterThan(0);
    await video.evaluate((element) => (element as HTMLVideoElement).pause());

    const taskId = ((await page.locator('#task-id').textContent()) ?? '').replace('Task ', '');
    await expect
      .poll(() => page.locator('#history-rows tr').first().textContent())
      .toContain(`SUCCEEDED${taskId}`);

    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    expect((await stat(SCREENSHOT)).size).toBeGreaterThan(10_000);
    // Everything came from the gateway itself (no CDN), and nothing broke the page's policy.
    const foreign = requests.filter((url) => !/^(https?|wss?):\/\/(127\.0\.0\.1|localhost):\d+\//.test(url));
    expect(foreign).toEqual([]);
    expect(problems).toEqual([]);
    await page.close();
  });

  it('shows an error member from a bad input with its code, and creates nothing', async () => {
    const page = await browser.newPage();
    await page.goto(`${app.url}/demo`);
    await page.getByRole('button', { name: 'Get a development token' }).click();
    await expect.poll(() => page.locator('#viewer').textContent()).toMatch(/^Signed in as demo/);
    const before = await page.locator('#history-rows tr').count();
    await page.locator('#prompt').fill('x'.repeat(5001));
    await page.getByRole('button', { name: 'Create and watch' }).click();
    await expect
      .poll(() => page.locator('#create-error').textContent())
      .toMatch(/^INVALID_INPUT \(prompt\): /);
    expect(await page.locator('#history-rows tr').count()).toBe(before);
    await page.close();
  });
});

describe('the /demo routes', () => {
  let app: RunningApp;
  let handle: DatabaseHandle;
  let database: TestDatabase;

  beforeAll(async () => {
    database = await createTestDatabase('pglite');
    handle = await database.open();
    const dataDir = await mkdtemp(path.join(tmpdir(), 'avatar-gateway-demo-'));
    app = await startApp(
      loadConfig({
        NODE_ENV: 'development',
        PORT: '0',
        HOST: '127.0.0.1',
        DATA_DIR: dataDir,
        LOG_LEVEL: 'silent',
      }),
      { database: handle },
    );
  });
  afterAll(async () => {
    await app?.stop();
    await handle?.close();
    await database?.dispose();
  });

  const askToken = (init: RequestInit) => fetch(`${app.url}/demo/token`, { method: 'POST', ...init });

  it('mints a development token only from a JSON body naming a plausible user', async () => {
    const ok = await askToken({ headers: { 'content-type': 'application/json' }, body: '{"user":"alice"}' });
    expect(ok.status).toBe(200);
    const { token } = (await ok.json()) as { token: string };
    const viewer = await fetch(`${app.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ query: '{ viewer { id } }' }),
    });
    expect(await viewer.json()).toEqual({ data: { viewer: { id: 'alice' } } });

    // A form post or a plain-text body (what another site could send without a preflight) is refused.
    expect((await askToken({ body: 'user=alice' })).status).toBe(415);
    const bad = await askToken({ headers: { 'content-type': 'application/json' }, body: '{"user":"a b"}' });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { code: string } }).error.code).toBe('INVALID_INPUT');
    const huge = await askToken({
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user: 'a'.repeat(5000) }),
    });
    expect(huge.status).toBe(413);
    expect((await fetch(`${app.url}/demo/token`)).status).toBe(405);
    expect((await fetch(`${app.url}/demo/nothing-here.js`)).status).toBe(404);
  });

  // Two production gateways, each on an embedded PGlite that takes seconds to start on a busy machine.
  it('is not served in production unless DEMO_ENABLED says so, and never mints tokens there', {
    timeout: 90_000,
  }, async () => {
    const [off, on] = await Promise.all([
      startProductionGateway(),
      startProductionGateway({ DEMO_ENABLED: 'true' }),
    ]);
    try {
      expect((await fetch(`${off.url}/demo`)).status).toBe(404);
      const page = await fetch(`${on.url}/demo`);
      expect(page.status).toBe(200);
      expect(await page.text()).toContain('<title>avatar-gateway · live demo</title>');
      const token = await fetch(`${on.url}/demo/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"user":"mallory"}',
      });
      expect(token.status).toBe(404);
    } finally {
      await Promise.all([off.stop(), on.stop()]);
    }
  });
});
