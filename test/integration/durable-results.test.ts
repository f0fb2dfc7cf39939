import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { decodeGlobalID } from '@pothos/plugin-relay';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import type { StoredResultRow } from '../../src/db/schema.js';
import { StoredResultRepository } from '../../src/storage/repository.js';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { databaseKinds, useTestDatabase } from '../helpers/database.js';
import {
  createTaskOk,
  getTask,
  metric,
  startTestGateway,
  type TaskView,
  type TestGateway,
  waitForState,
} from '../helpers/gateway.js';
import { startTestS3Server, type TestS3Server } from '../helpers/s3-server.js';
import { connectWs, TASK_UPDATED, type TaskUpdatedData, tasksOf } from '../helpers/subscriptions.js';

const wait = { timeout: 15_000, interval: 50 };
const sample = await readFile(new URL('../../assets/sample.mp4', import.meta.url));
const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

async function download(url: string, init?: RequestInit) {
  const response = await fetch(url, init);
  return {
    status: response.status,
    headers: response.headers,
    bytes: Buffer.from(await response.arrayBuffer()),
  };
}

/** A signed URL with one character of its signature changed. */
const tampered = (url: string) =>
  url.replace(
    /([sS]ignature=)(.)/,
    (_whole, name: string, first: string) => name + (first === 'a' ? 'b' : 'a'),
  );

describe.each(databaseKinds())('on %s', (kind) => {
  const database = useTestDatabase(kind);
  let kie: SimulatorServer;
  let s3: TestS3Server;
  const running: TestGateway[] = [];

  beforeAll(async () => {
    kie = await startSimulatorServer({ knobs: { stepMs: 50 } });
    s3 = await startTestS3Server();
  });
  afterAll(async () => {
    await kie?.close();
    await s3?.close();
  });
  beforeEach(() => {
    Object.assign(kie.simulator.knobs, {
      resultUrlTtlMs: Number.POSITIVE_INFINITY,
      resultErrors: [],
      resultDelayMs: 0,
      downloadUrlErrors: [],
    });
  });
  afterEach(async () => {
    for (const gateway of running.splice(0).reverse()) await gateway.stop().catch(() => {});
  });

  async function gateway(backend: 'local' | 's3', env: Record<string, string> = {}) {
    const started = await startTestGateway({
      database,
      kieUrl: kie.url,
      env: {
        ...(backend === 's3' ? s3.env : {}),
        RESULT_COPY_RETRY_MS: '50',
        RESULT_COPY_INTERVAL_MS: '50',
        ...env,
      },
    });
    running.push(started);
    return started;
  }

  /** The gateway's URLs name its public URL (localhost); tests reach it where it listens. */
  const reachable = (gateway: TestGateway, url: string) => url.replace(gateway.app.publicUrl, gateway.url);

  /** Waits until the task's video is the gateway's own copy, not kie's link. */
  async function waitForCopy(
    gateway: TestGateway,
    id: string,
    user?: string,
  ): Promise<TaskView & { videoUrl: string }> {
    let task: TaskView | null = null;
    await vi.waitFor(async () => {
      task = await getTask(gateway, id, user);
      expect(task?.videoUrl).toBeTruthy();
      expect(task?.videoUrl).not.toContain(kie.url);
    }, wait);
    return task as unknown as TaskView & { videoUrl: string };
  }

  /** `count` tasks of `user`, each SUCCEEDED with its copy stored: task id → the copy's URL. */
  async function copiedTasks(
    gateway: TestGateway,
    user: string,
    count: number,
  ): Promise<Map<string, string>> {
    const created = await Promise.all(
      Array.from({ length: count }, () => createTaskOk(gateway, undefined, user)),
    );
    const copies = new Map<string, string>();
    for (const task of created) {
      await waitForState(gateway, task.id, 'SUCCEEDED', user);
      copies.set(task.id, (await waitForCopy(gateway, task.id, user)).videoUrl);
    }
    return copies;
  }

  async function storedRow(id: string): Promise<StoredResultRow | undefined> {
    const handle = await database.open();
    const [row] = await new StoredResultRepository(handle.db).listForTasks([decodeGlobalID(id).id]);
    return row;
  }

  describe.each(['local', 's3'] as const)('in %s storage', (backend) => {
    it("plays the same bytes from the gateway's copy after kie's result URL expired", async () => {
      const gw = await gateway(backend);
      const created = await createTaskOk(gw);
      const done = await waitForState(gw, created.id, 'SUCCEEDED');
      await waitForCopy(gw, created.id);

      kie.simulator.knobs.resultUrlTtlMs = 0;
      const kieUrl = `${kie.url}/results/${done.upstreamTaskId}.mp4`;
      expect((await download(kieUrl)).status).toBe(403);

      const task = await getTask(gw, created.id);
      const videoUrl = reachable(gw, task?.videoUrl ?? '');
      expect(task?.resultUrls).toEqual([task?.videoUrl]);
      const full = await download(videoUrl);
      expect(full.status).toBe(200);
      expect(full.headers.get('content-type')).toBe('video/mp4');
      expect(full.headers.get('content-length')).toBe(String(sample.byteLength));
      expect(sha256(full.bytes)).toBe(sha256(sample));

      // A player seeks with ranges.
      const range = await download(videoUrl, { headers: { range: 'bytes=100-199' } });
      expect(range.status).toBe(206);
      expect(range.headers.get('content-range')).toBe(`bytes 100-199/${sample.byteLength}`);
      expect(range.bytes.equals(sample.subarray(100, 200))).toBe(true);

      const row = await storedRow(created.id);
      expect(row).toMatchObject({ status: 'stored', sizeBytes: sample.byteLength, sha256: sha256(sample) });
      expect(row?.durationSeconds).toBeCloseTo(2.02, 1);
    });

    it('refuses a signed URL past its expiry, and a tampered one', async () => {
      const gw = await gateway(backend, { RESULT_URL_TTL_S: '1' });
      const created = await createTaskOk(gw);
      const url = reachable(gw, (await waitForCopy(gw, created.id)).videoUrl);
      // s3rver checks a presigned URL's expiry but not its SigV4 signature (AWS and MinIO check both), so
      // tampering is tried on the gateway's own URLs only.
      if (backend === 'local') {
        const forged = await download(tampered(url));
        expect(forged.status).toBe(403);
        expect(JSON.parse(forged.bytes.toString())).toMatchObject({ error: { code: 'INVALID_SIGNATURE' } });
        const stretched = await download(url.replace(/expires=\d+/, (value) => `${value}0`));
        expect(stretched.status).toBe(403);
      }

      await new Promise((resolve) => setTimeout(resolve, 2_100));
      const late = await download(url);
      if (backend === 'local') {
        expect(late.status).toBe(410);
        expect(JSON.parse(late.bytes.toString())).toMatchObject({ error: { code: 'URL_EXPIRED' } });
      } else {
        expect(late.status).toBe(403);
      }
      // Reading the task again gives a fresh URL that plays. A presigned URL's date is in whole seconds, so
      // with this one-second lifetime a fresh URL may have only a few milliseconds left when it is used: a
      // URL that is refused is read afresh, up to three times (a URL that never played would fail all three).
      let fresh = { status: 0, bytes: Buffer.alloc(0) };
      for (let attempt = 0; attempt < 3 && fresh.status !== 200; attempt++) {
        const freshUrl = reachable(gw, (await getTask(gw, created.id))?.videoUrl ?? '');
        expect(freshUrl).not.toBe(url);
        fresh = await download(freshUrl);
      }
      expect(fresh.status).toBe(200);
      expect(sha256(fresh.bytes)).toBe(sha256(sample));
    });

    it("a since: replay over graphql-ws gives every task's copy, read for the page at once", async () => {
      const gw = await gateway(backend);
      const startedAt = new Date(Date.now() - 1_000);
      const user = `replay-${backend}`;
      const copies = await copiedTasks(gw, user, 3);
      const socket = await connectWs(gw, user);
      const received = socket.subscribe<TaskUpdatedData>({
        query: TASK_UPDATED,
        variables: { since: startedAt.toISOString() },
      });
      await received.until((r) => tasksOf(r).length >= 3);
      await socket.dispose();
      const replayed = tasksOf(received);
      expect(new Set(replayed.map((task) => task.id))).toEqual(new Set(copies.keys()));
      for (const task of replayed) {
        expect(task.state).toBe('SUCCEEDED');
        // The same copy the query gives (a signed URL to it: same path, its own expiry).
        expect(task.videoUrl?.split('?')[0]).toBe(copies.get(task.id)?.split('?')[0]);
        expect(task.videoUrl).not.toContain(kie.url);
      }
    });

    it("a history page lists every task's copy, read in the page's own statement", async () => {
      const gw = await gateway(backend);
      const user = `history-${backend}`;
      const copies = await copiedTasks(gw, user, 3);
      const reads = vi.spyOn(StoredResultRepository.prototype, 'listForTasks');
      try {
        const page = await gw.gql<{
          avatarTasks: { edges: Array<{ node: { id: string; videoUrl: string; resultUrls: string[] } }> };
        }>('query { avatarTasks(first: 10) { edges { node { id videoUrl resultUrls } } } }', {}, user);
        const nodes = page.data?.avatarTasks.edges.map((edge) => edge.node) ?? [];
        expect(new Set(nodes.map((node) => node.id))).toEqual(new Set(copies.keys()));
        for (const node of nodes) {
          expect(node.videoUrl.split('?')[0]).toBe(copies.get(node.id)?.split('?')[0]);
          expect(node.resultUrls).toEqual([node.videoUrl]);
        }
        // No stored_results query of their own: the copies came with the page.
        expect(reads).not.toHaveBeenCalled();
      } finally {
        reads.mockRestore();
      }
    });

    it('retries a copy while the result URL fails, without holding up SUCCEEDED', async () => {
      kie.simulator.knobs.resultErrors = [500, 500, 500];
      const gw = await gateway(backend);
      const created = await createTaskOk(gw);
      const done = await waitForState(gw, created.id, 'SUCCEEDED');
      expect(done.events.at(-1)).toMatchObject({ state: 'SUCCEEDED', source: 'CALLBACK' });

      const copied = await waitForCopy(gw, created.id);
      expect(sha256((await download(reachable(gw, copied.videoUrl))).bytes)).toBe(sha256(sample));
      expect(await metric(gw, 'avatar_gateway_result_copies_total{outcome="retry"}')).toBe(3);
      const row = await storedRow(created.id);
      expect(row?.attempts).toBe(3);
      // The state change came first; the copy followed it in the background.
      expect(row?.storedAt?.getTime()).toBeGreaterThan(Date.parse(String(done.completedAt)));
    });

    it('resumes a copy that a restart cut off', async () => {
      kie.simulator.knobs.resultDelayMs = 60_000;
      const first = await gateway(backend);
      const created = await createTaskOk(first);
      await waitForState(first, created.id, 'SUCCEEDED');
      const before = kie.simulator.stats.resultRequests;
      await vi.waitFor(() => expect(kie.simulator.stats.resultRequests).toBeGreaterThan(before - 1), wait);
      await vi.waitFor(async () => expect((await storedRow(created.id))?.leaseUntil).not.toBeNull(), wait);
      await first.stop();
      kie.simulator.knobs.resultDelayMs = 0;

      const second = await gateway(backend);
      const copied = await waitForCopy(second, created.id);
      expect(sha256((await download(reachable(second, copied.videoUrl))).bytes)).toBe(sha256(sample));
      // The attempt the stop cut off does not count as a failure.
      expect((await storedRow(created.id))?.attempts).toBe(0);
    });

    it('removes a copy after its retention; the task then lists no video', async () => {
      const gw = await gateway(backend, { RESULT_RETENTION_S: '1' });
      const created = await createTaskOk(gw);
      const url = reachable(gw, (await waitForCopy(gw, created.id)).videoUrl);
      await vi.waitFor(async () => {
        const task = await getTask(gw, created.id);
        expect(task).toMatchObject({ state: 'SUCCEEDED', videoUrl: null, resultUrls: [] });
      }, wait);
      await vi.waitFor(async () => expect((await storedRow(created.id))?.status).toBe('removed'), wait);
      expect((await download(url)).status).toBe(404);
    });
  });

  it("hands out a fresh link from kie's download-url while no copy exists", async () => {
    const gw = await gateway('local', { RESULT_STORAGE: 'none', KIE_RESULT_URL_FRESH_S: '0' });
    const before = kie.simulator.stats.downloadUrls;
    const created = await createTaskOk(gw);
    const done = await waitForState(gw, created.id, 'SUCCEEDED');
    kie.simulator.knobs.resultUrlTtlMs = 0;
    expect((await download(`${kie.url}/results/${done.upstreamTaskId}.mp4`)).status).toBe(403);

    const task = await getTask(gw, created.id);
    expect(task?.videoUrl).toContain(`${kie.url}/results/${done.upstreamTaskId}.mp4?expires=`);
    const video = await download(task?.videoUrl ?? '');
    expect(video.status).toBe(200);
    expect(sha256(video.bytes)).toBe(sha256(sample));
    // The link is reused until shortly before it expires: one download-url call for every read.
    expect((await getTask(gw, created.id))?.videoUrl).toBe(task?.videoUrl);
    expect(kie.simulator.stats.downloadUrls).toBe(before + 1);
  });

  it('asks kie once, not on every read, while it cannot refresh a link; its own URL is given meanwhile', async () => {
    const gw = await gateway('local', { RESULT_STORAGE: 'none', KIE_RESULT_URL_FRESH_S: '0' });
    kie.simulator.knobs.downloadUrlErrors = [500, 500, 500, 500, 500];
    const before = kie.simulator.stats.downloadUrlRequests;
    const created = await createTaskOk(gw);
    const done = await waitForState(gw, created.id, 'SUCCEEDED');
    const kieUrl = `${kie.url}/results/${done.upstreamTaskId}.mp4`;

    for (let read = 0; read < 5; read++) expect((await getTask(gw, created.id))?.videoUrl).toBe(kieUrl);
    // One refused refresh, then kie's own URL for FAILED_REFRESH_RETRY_MS without asking again.
    expect(kie.simulator.stats.downloadUrlRequests).toBe(before + 1);
    expect(await metric(gw, 'avatar_gateway_result_link_refreshes_total{outcome="failed"}')).toBe(1);
  });
});
