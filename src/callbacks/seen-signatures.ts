import { createHash } from 'node:crypto';
import { lt, sql } from 'drizzle-orm';
import type { Logger } from 'pino';
import type { Database } from '../db/connection.js';
import { seenCallbackSignatures } from '../db/schema.js';

/** Expired signatures are deleted at most this often per instance, by whichever callback comes next. */
const PRUNE_EVERY_MS = 60_000;

const hashOf = (signature: string) => createHash('sha256').update(signature).digest('hex');

/**
 * kie's webhook signature covers `taskId.timestamp`, not the body, so anyone who saw one signed callback could
 * send other bodies with its headers while the timestamp is inside the window. Each signature is therefore
 * accepted once: its first use is recorded in Postgres (shared by every instance) until the timestamp has
 * left the window, and a second use is a replay.
 */
export class SeenSignatures {
  private lastPrunedAt = 0;

  constructor(
    private readonly db: Database,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  /** True for the first use of `signature`, which is recorded; false for a replay. */
  async firstUse(signature: string, expiresAt: Date): Promise<boolean> {
    this.pruneNowAndThen();
    const recorded = await this.db
      .insert(seenCallbackSignatures)
      .values({ signatureHash: hashOf(signature), expiresAt })
      .onConflictDoNothing()
      .returning({ hash: seenCallbackSignatures.signatureHash });
    return recorded.length > 0;
  }

  /** Undoes a first use whose callback could not be stored, so that kie's retry of it is not a replay. */
  async forget(signature: string): Promise<void> {
    await this.db
      .delete(seenCallbackSignatures)
      .where(sql`${seenCallbackSignatures.signatureHash} = ${hashOf(signature)}`);
  }

  private pruneNowAndThen(): void {
    const now = this.now();
    if (now - this.lastPrunedAt < PRUNE_EVERY_MS) return;
    this.lastPrunedAt = now;
    void this.db
      .delete(seenCallbackSignatures)
      .where(lt(seenCallbackSignatures.expiresAt, new Date(now)))
      .catch((error) => this.logger.warn({ err: error }, 'pruning seen callback signatures failed'));
  }
}
