import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { parseFile } from 'music-metadata';
import type { Logger } from 'pino';
import type { StorageConfig } from '../config.js';
import type { StoredResultRow } from '../db/schema.js';
import { DeadlineExceededError, withDeadline } from '../deadline.js';
import type { GuardedFetcher } from '../inputs/ssrf-guard.js';
import type { Metrics } from '../metrics.js';
import { whileLeased } from '../tasks/lease.js';
import { outsideRequest } from '../telemetry/request-context.js';
import { jitteredBackoffMs, type KieClient } from '../upstream/kie-client.js';
import { DownloadError, type Downloaded, downloadToFile } from './download.js';
import type { StoredResultRepository } from './repository.js';
import { type ResultStore, resultKey } from './result-store.js';

export interface ResultCopierOptions {
  repository: StoredResultRepository;
  store: ResultStore;
  kie: KieClient;
  logger: Logger;
  metrics: Metrics;
  settings: StorageConfig;
  /** The SSRF guard every result download goes through; the copier closes it when it stops. */
  fetcher: GuardedFetcher;
  /** How often due copies are looked for (retries, other instances' work); a SUCCEEDED here wakes it at once. */
  intervalMs: number;
  /** How long a copy this instance took stays its own unless renewed (renewed while it runs). */
  leaseMs: number;
  /** A look for work that takes longer is abandoned and the next one scheduled. */
  tickTimeoutMs: number;
}

/** Removals one sweep makes at most: the sweeper catches up over sweeps and never holds up copies. */
const SWEEP_BATCH = 20;
/** The sweep for copies past their retention runs this often at most (more often only for a shorter retention). */
const SWEEP_INTERVAL_MS = 60_000;

/**
 * Copies each SUCCEEDED task's videos into the gateway's own storage, in the background: the rows to copy
 * are written with the state change, so nothing here delays it or the callback's answer. A copy is leased
 * (renewed while it runs), so a restart resumes it and two instances never copy one result at once; a failed
 * attempt is retried with jittered, doubling backoff up to RESULT_COPY_ATTEMPTS, and each attempt has a
 * deadline and a byte cap. The same loop deletes copies past their retention.
 */
export class ResultCopier {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly leased = new Set<string>();
  /** Aborts the copies in flight when the gateway stops; their leases are released for another instance. */
  private readonly stopping = new AbortController();
  private stopped = true;
  private ticking = false;
  /** A wake that came while a tick ran: the next tick follows at once. */
  private wokenWhileTicking = false;
  private lastSweepAt = 0;

  constructor(private readonly options: ResultCopierOptions) {}

  /**
   * Looks for work now instead of at the next interval: a task just SUCCEEDED. The interval alone would make
   * every idle instance ask the database for copies many times a second to copy as promptly.
   */
  wake(): void {
    if (this.stopped) return;
    if (this.ticking) {
      this.wokenWhileTicking = true;
      return;
    }
    clearTimeout(this.timer);
    this.schedule(0);
  }

  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.stopping.abort();
    await this.running;
    const held = [...this.leased];
    await Promise.allSettled([...this.inFlight]);
    // Removals in flight are not aborted; whatever is still leased is released (a finished one holds none).
    await this.options.repository.releaseLeases(held);
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    // A callback's wake must not make the loop its own: the copies are no request's work.
    this.timer = outsideRequest(() =>
      setTimeout(() => {
        const { tickTimeoutMs, logger } = this.options;
        this.ticking = true;
        this.wokenWhileTicking = false;
        this.running = withDeadline(
          this.tick(),
          tickTimeoutMs,
          () =>
            new DeadlineExceededError(`result copier tick took longer than ${tickTimeoutMs} ms; abandoned`),
        )
          .catch((error) => logger.error({ err: error }, 'result copier tick failed'))
          .finally(() => {
            this.ticking = false;
            this.schedule(this.wokenWhileTicking ? 0 : this.options.intervalMs);
          });
      }, delayMs),
    );
    this.timer.unref();
  }

  /** Takes what is due, up to RESULT_COPY_CONCURRENCY copies at once, and deletes what retention ended. */
  async tick(): Promise<void> {
    const { repository, leaseMs, settings } = this.options;
    const room = settings.concurrency - this.inFlight.size;
    const due = await repository.claimDue(room, leaseMs);
    for (const job of due) this.track(job, () => this.copy(job));
    const sweepEveryMs = Math.min(SWEEP_INTERVAL_MS, settings.retentionS * 1000);
    if (Date.now() - this.lastSweepAt >= sweepEveryMs) {
      this.lastSweepAt = Date.now();
      const expired = await repository.claimExpired(SWEEP_BATCH, leaseMs);
      for (const job of expired) this.track(job, () => this.remove(job));
    }
  }

  private track(job: StoredResultRow, work: () => Promise<void>): void {
    const { repository, leaseMs, logger } = this.options;
    this.leased.add(job.id);
    const running: Promise<void> = whileLeased(repository, job.id, leaseMs, logger, work)
      .catch((error) => logger.error({ err: error, taskId: job.taskId }, 'result copy bookkeeping failed'))
      .finally(() => {
        this.inFlight.delete(running);
        this.leased.delete(job.id);
      });
    this.inFlight.add(running);
  }

  private async copy(job: StoredResultRow): Promise<void> {
    const { store, repository, settings, logger, metrics } = this.options;
    const staged = path.join(store.stagingDir, `${job.id}.part`);
    const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(settings.copyTimeoutMs)]);
    try {
      await mkdir(store.stagingDir, { recursive: true });
      const downloaded = await this.download(job, staged, signal);
      const durationSeconds = await readDuration(staged);
      const key = resultKey(job.taskId, job.position);
      await store.put(key, staged, downloaded.contentType, signal);
      const storedAt = new Date();
      await repository.markStored(job.id, {
        storageKey: key,
        contentType: downloaded.contentType,
        sizeBytes: downloaded.sizeBytes,
        sha256: downloaded.sha256,
        durationSeconds,
        storedAt,
        expiresAt: new Date(storedAt.getTime() + settings.retentionS * 1000),
      });
      metrics.resultCopies.inc({ outcome: 'stored' });
      logger.info(
        { taskId: job.taskId, position: job.position, bytes: downloaded.sizeBytes },
        'result stored',
      );
    } catch (error) {
      // A stop abandons the attempt without counting it, and frees it for another instance at once.
      if (this.stopping.signal.aborted) {
        await repository.releaseLeases([job.id]);
        return;
      }
      const attempts = job.attempts + 1;
      const giveUp = attempts >= settings.copyAttempts;
      const retryAt = giveUp
        ? undefined
        : new Date(Date.now() + jitteredBackoffMs(attempts, settings.retryMs, settings.retryMaxMs));
      const message = error instanceof Error ? error.message : String(error);
      await repository.markAttemptFailed(job.id, attempts, message, retryAt);
      metrics.resultCopies.inc({ outcome: giveUp ? 'failed' : 'retry' });
      logger.warn(
        { taskId: job.taskId, position: job.position, attempts, err: error },
        giveUp ? 'copying a result failed; given up' : 'copying a result failed; will retry',
      );
    } finally {
      await rm(staged, { force: true }).catch(() => {});
    }
  }

  /** kie's URL first; when it is dead (expired), a fresh link from kie's download-url. */
  private async download(job: StoredResultRow, staged: string, signal: AbortSignal): Promise<Downloaded> {
    const limits = { maxBytes: this.options.settings.maxBytes, signal };
    try {
      return await downloadToFile(this.options.fetcher, job.sourceUrl, staged, limits);
    } catch (error) {
      if (!(error instanceof DownloadError && error.linkDead)) throw error;
      const fresh = await this.options.kie.downloadUrl(job.sourceUrl);
      return downloadToFile(this.options.fetcher, fresh, staged, limits);
    }
  }

  private async remove(job: StoredResultRow): Promise<void> {
    const { store, repository, metrics, logger } = this.options;
    try {
      if (job.storageKey) await store.remove(job.storageKey);
      await repository.markRemoved(job.id);
      metrics.resultCopies.inc({ outcome: 'removed' });
    } catch (error) {
      // Its lease runs out and the next sweep tries again.
      logger.warn({ err: error, taskId: job.taskId }, 'removing a result past its retention failed');
    }
  }
}

/** The video's duration from its header (music-metadata reads MP4's); null when it cannot be read. */
async function readDuration(file: string): Promise<number | null> {
  try {
    const { format } = await parseFile(file, { duration: true, skipCovers: true });
    return format.duration ?? null;
  } catch {
    return null;
  }
}
