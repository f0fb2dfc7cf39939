/**
 * What every follower of a reconnect storm received, per task: the versions in the order they arrived, checked
 * against what the database says each task should reach. A version at or below the last one received is a
 * duplicate (or out of order); a version more than one above it, or a final version short of the expected
 * one, is a missed change.
 */

export interface LedgerUpdate {
  /** The task's global id. */
  id: string;
  version: number;
  updatedAt: string;
}

interface TaskEntry {
  version: number;
  /** When the last version arrived (performance.now()). */
  at: number;
  expected: number;
  /** When `expected` was set: a probe's send time, to measure its delivery. */
  expectedSince: number | undefined;
  deliveredAfterMs: number | undefined;
}

export class UpdateLedger {
  private readonly tasks = new Map<string, TaskEntry>();
  duplicated = 0;
  /** Changes skipped over: a version that jumped past the next one. */
  private skipped = 0;
  /** Expected versions not yet received. */
  private outstanding = 0;
  /** When the last expected version arrived (performance.now()). */
  lastExpectedAt = 0;

  /** A task the follower should hear about, at `version` (its first update is expected too). */
  expect(id: string, version: number, since?: number): void {
    const entry = this.tasks.get(id) ?? {
      version: 0,
      at: 0,
      expected: 0,
      expectedSince: undefined,
      deliveredAfterMs: undefined,
    };
    this.tasks.set(id, entry);
    const wasOutstanding = entry.version < entry.expected;
    entry.expected = version;
    entry.expectedSince = since;
    entry.deliveredAfterMs = undefined;
    const isOutstanding = entry.version < entry.expected;
    this.outstanding += Number(isOutstanding) - Number(wasOutstanding);
  }

  record(update: LedgerUpdate, at: number): void {
    const entry = this.tasks.get(update.id);
    // A task nobody said to expect: another user's, which would be a leak; counted as a duplicate so it shows.
    if (!entry) {
      this.duplicated++;
      return;
    }
    if (update.version <= entry.version) {
      this.duplicated++;
      return;
    }
    if (entry.version > 0) this.skipped += update.version - entry.version - 1;
    const wasOutstanding = entry.version < entry.expected;
    entry.version = update.version;
    entry.at = at;
    if (wasOutstanding && entry.version >= entry.expected) {
      this.outstanding--;
      this.lastExpectedAt = at;
      if (entry.expectedSince !== undefined) entry.deliveredAfterMs = at - entry.expectedSince;
    }
  }

  /** Every expected version has arrived. */
  get complete(): boolean {
    return this.outstanding === 0;
  }

  get pending(): number {
    return this.outstanding;
  }

  /** Changes that never arrived or were skipped over. */
  get missed(): number {
    let short = 0;
    for (const entry of this.tasks.values()) short += Math.max(0, entry.expected - entry.version);
    return short + this.skipped;
  }

  /** How long each probe took from its send to its arrival, in ms, for the probes that arrived. */
  probeLatencies(): number[] {
    const latencies: number[] = [];
    for (const entry of this.tasks.values()) {
      if (entry.deliveredAfterMs !== undefined) latencies.push(entry.deliveredAfterMs);
    }
    return latencies;
  }

  clearProbes(): void {
    for (const entry of this.tasks.values()) {
      entry.expectedSince = undefined;
      entry.deliveredAfterMs = undefined;
    }
  }
}
