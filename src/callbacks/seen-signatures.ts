import { createHash } from 'node:crypto';
import { lt, sql } from 'drizzle-orm';
import type { Logger } from 'pino';
import type { Database } from '../db/connection.js';
import type { AvatarTaskRow } from '../db/schema.js';
import { seenCallbackSignatures } from '../db/schema.js';
import type { TaskRepository } from '../tasks/repository.js';

/** Expired signatures are deleted at most this often per instance, by whichever callback comes next. */
const PRUNE_EVERY_MS = 60_000;

const hashOf = (signature: string) => createHash('sha256').update(signature).digest('hex');

/**
 * kie's webhook signature covers `taskId.timestamp`, not the body, so anyone who saw one signed callback could
 * send other bodies with its headers while the timestamp is inside the window. Each signature is therefore
 * accepted once: its first use is recorded in Postgres (shared by every instance) until the timestamp has
 * left the window, and a second use is a replay.
 *
 * The first use is recorded by the statement that reads the callback's task, so a signed callback costs no
 * round trip more than an unsigned one. Its HMAC was checked before (it needs no row), so only a signature kie
 * made is ever recorded, and only for a task that exists; one recorded with a wrong URL secret is forgotten
 * again when it was its first use. A sender could only race kie's own callback with one of kie's signatures by
 * knowing it before kie sent it.
 */
export class SeenSignatures {
  private lastPrunedAt = 0;

  constructor(
    private readonly db: Database,
    private readonly repository: TaskRepository,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  /** The callback's task, and whether this is the first use of `signature` (now recorded) or a replay. */
  async taskRecordingFirstUse(
    taskId: string,
    signature: string,
    expiresAt: Date,
  ): Promise<{ task: AvatarTaskRow | undefined; firstUse: boolean }> {
    this.pruneNowAndThen();
    return this.repository.findRecordingSignature(taskId, { hash: hashOf(signature), expiresAt });
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
