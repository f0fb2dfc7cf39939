import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { AvatarTaskRow, StoredResultRow } from '../db/schema.js';
import { DeadlineExceededError, withDeadline } from '../deadline.js';
import type { Metrics } from '../metrics.js';
import { KieError } from '../upstream/errors.js';
import type { KieClient } from '../upstream/kie-client.js';
import type { ResultStore } from './result-store.js';

/** kie's download-url links live 20 minutes; one is handed out until 5 minutes before that. */
const FRESH_LINK_REUSE_MS = 15 * 60_000;
const FRESH_LINK_CACHE_ENTRIES = 10_000;
/** How long a read waits for a fresh link before it gives kie's own URL. */
const REFRESH_WAIT_MS = 3_000;
/**
 * After kie could not refresh a link (down, slow, rate-limited), reads give its own URL for this long before
 * kie is asked again: a history page of old results must not cost a kie call per task per read while kie is
 * unwell. A link kie refuses outright (a URL it did not make) is not asked about again while it would be reused.
 */
const FAILED_REFRESH_RETRY_MS = 30_000;

export interface ResultLinksOptions {
  store: ResultStore | undefined;
  kie: KieClient;
  logger: Logger;
  metrics: Metrics;
  /** Lifetime of a signed or presigned URL to a copy. */
  urlTtlS: number;
  /** kie's own URL is handed out as it is for this long after the task SUCCEEDED. */
  kieUrlFreshS: number;
}

/**
 * What `resultUrls` and `videoUrl` say. A result whose copy is stored: a signed URL to the copy (the folder's
 * or the bucket's), valid RESULT_URL_TTL_S. A copy removed after its retention: no URL (the video is gone).
 * No copy yet (or it failed): kie's URL while it is young, then a fresh link from kie's download-url, reused
 * until shortly before it expires, so a dead link is never handed out while kie still has the file.
 */
export class ResultLinks {
  private readonly fresh: LRUCache<string, string>;
  /** Links kie could not refresh lately: their own URL is given without asking kie (FAILED_REFRESH_RETRY_MS). */
  private readonly unrefreshable: LRUCache<string, true>;

  constructor(private readonly options: ResultLinksOptions) {
    this.fresh = new LRUCache<string, string>({
      max: FRESH_LINK_CACHE_ENTRIES,
      ttl: FRESH_LINK_REUSE_MS,
      // One download-url call per link however many readers ask at once.
      fetchMethod: async (url) => {
        try {
          const link = await options.kie.downloadUrl(url);
          options.metrics.resultLinkRefreshes.inc({ outcome: 'ok' });
          return link;
        } catch (error) {
          // Remembered here, not where a read gives up waiting: a slow answer that does come is still cached.
          const refused = error instanceof KieError && error.kind === 'rejected';
          this.unrefreshable.set(url, true, { ttl: refused ? FRESH_LINK_REUSE_MS : FAILED_REFRESH_RETRY_MS });
          throw error;
        }
      },
    });
    this.unrefreshable = new LRUCache<string, true>({
      max: FRESH_LINK_CACHE_ENTRIES,
      ttl: FAILED_REFRESH_RETRY_MS,
    });
  }

  async urlsFor(
    task: AvatarTaskRow,
    stored: readonly StoredResultRow[],
    now = Date.now(),
  ): Promise<string[]> {
    if (task.state !== 'SUCCEEDED') return [];
    const urls = await Promise.all(
      task.resultUrls.map((url, position) =>
        this.urlFor(
          task,
          url,
          stored.find((row) => row.position === position),
          now,
        ),
      ),
    );
    return urls.filter((url): url is string => url !== undefined);
  }

  private async urlFor(
    task: AvatarTaskRow,
    kieUrl: string,
    row: StoredResultRow | undefined,
    now: number,
  ): Promise<string | undefined> {
    const { store } = this.options;
    if (row?.status === 'removed') return undefined;
    if (row?.status === 'stored' && row.storageKey && store) {
      if (row.expiresAt && row.expiresAt.getTime() <= now) return undefined;
      return store.url(row.storageKey, this.options.urlTtlS);
    }
    const completedAt = task.completedAt?.getTime() ?? now;
    if (now - completedAt < this.options.kieUrlFreshS * 1000) return kieUrl;
    return this.refreshed(kieUrl);
  }

  /** A fresh link from kie; when kie cannot give one (down, or a URL it did not make), its own URL. */
  private async refreshed(kieUrl: string): Promise<string> {
    if (this.unrefreshable.has(kieUrl)) return kieUrl;
    try {
      // A slow kie holds up no read for long: the link it brings later is cached for the next one.
      const link = await withDeadline(
        this.fresh.fetch(kieUrl),
        REFRESH_WAIT_MS,
        () => new DeadlineExceededError(`kie's download-url took longer than ${REFRESH_WAIT_MS} ms`),
      );
      return link ?? kieUrl;
    } catch (error) {
      this.options.metrics.resultLinkRefreshes.inc({ outcome: 'failed' });
      this.options.logger.warn({ err: error }, "refreshing kie's result link failed; its own URL is given");
      return kieUrl;
    }
  }
}
