import { constants, monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import { writeHeapSnapshot } from 'node:v8';
import { toSharedClock } from './shared-clock.js';

/**
 * The server side of the IPC protocol every bench server process speaks (the gateway launcher and each
 * baseline): it reports `ready` with its URL, and answers the orchestrator's `gc`, `memory`, `cpu`, `stats`
 * and `stop`.
 */

export type ParentMessage =
  | { id: number; type: 'gc' | 'memory' | 'cpu' | 'stats' | 'stop' }
  | { id: number; type: 'heapSnapshot'; file: string };
export type ChildMessage =
  /**
   * `at`: the moment it was ready, and `startedAt` the moment its process started (its performance.now()'s
   * zero), both on the shared clock (shared-clock.ts); `cpuMicros`: its CPU until then.
   */
  | { type: 'ready'; url: string; at: number; startedAt: number; cpuMicros: number }
  | { type: 'failed'; message: string }
  | { type: 'reply'; id: number; value: unknown };

export interface ChildHooks {
  stop(): Promise<void>;
  /** Whatever the scenario wants to read from inside the process (counters, sizes). */
  stats?(): unknown;
}

/** The environment the orchestrator chose for this process; the shell's own variables never leak in. */
export function benchEnv(): Record<string, string> {
  const raw = process.env.BENCH_ENV;
  if (!raw) throw new Error('BENCH_ENV is not set: start this file through bench/run.ts');
  return JSON.parse(raw) as Record<string, string>;
}

export interface GcPauses {
  count: number;
  totalMs: number;
  maxMs: number;
}

export interface GcStats {
  minor: GcPauses;
  major: GcPauses;
}

export const describeGc = (gc: GcStats) =>
  `${gc.major.count} major collections (longest ${gc.major.maxMs.toFixed(0)} ms), ${gc.minor.count} minor (longest ${gc.minor.maxMs.toFixed(0)} ms)`;

/** Garbage-collection pauses since the process started (or since the last `stats`), by kind. */
const pauses = { minor: newPauses(), major: newPauses() };
/** Major collections since the last `cpu` sample. */
let majorSinceSample = 0;
function newPauses(): GcPauses {
  return { count: 0, totalMs: 0, maxMs: 0 };
}
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    const kind = (entry as { detail?: { kind?: number } }).detail?.kind;
    const bucket = kind === constants.NODE_PERFORMANCE_GC_MAJOR ? pauses.major : pauses.minor;
    bucket.count++;
    if (bucket === pauses.major) majorSinceSample++;
    bucket.totalMs += entry.duration;
    bucket.maxMs = Math.max(bucket.maxMs, entry.duration);
  }
}).observe({ entryTypes: ['gc'] });

/**
 * How late the event loop ran its callbacks since the last `cpu` sample: a step whose tail is slow while the
 * loop never stalled was waiting on something outside the process (the database, the network).
 */
const loopDelay = monitorEventLoopDelay({ resolution: 5 });
loopDelay.enable();

function send(message: ChildMessage): void {
  process.send?.(message);
}

function collectGarbage(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('start this process with --expose-gc');
  // Twice: the first pass can leave weakly held or finalizable objects for the second.
  gc();
  gc();
}

export function reportReady(url: string, hooks: ChildHooks): void {
  let stopping = false;
  process.on('message', async (raw: ParentMessage) => {
    const reply = (value: unknown) => send({ type: 'reply', id: raw.id, value });
    switch (raw.type) {
      case 'gc':
        collectGarbage();
        reply(process.memoryUsage());
        return;
      case 'memory':
        reply(process.memoryUsage());
        return;
      case 'heapSnapshot':
        collectGarbage();
        reply(writeHeapSnapshot(raw.file));
        return;
      case 'cpu':
        reply({ cpu: process.cpuUsage(), loopDelayMaxMs: loopDelay.max / 1e6, majorGcs: majorSinceSample });
        loopDelay.reset();
        majorSinceSample = 0;
        return;
      case 'stats': {
        // GC pauses since the last `stats`: a long major collection stalls every request at once.
        reply({ ...((hooks.stats?.() as object | undefined) ?? {}), gc: { ...pauses } });
        pauses.minor = newPauses();
        pauses.major = newPauses();
        return;
      }
      case 'stop':
        if (stopping) return;
        stopping = true;
        await hooks.stop().catch((error: unknown) => console.error('stopping failed:', error));
        reply(null);
        // A normal exit, so `--cpu-prof` writes its profile.
        process.exit(0);
    }
  });
  // The orchestrator died: do not linger on the pinned core.
  process.on('disconnect', () => process.exit(0));
  const cpu = process.cpuUsage();
  send({
    type: 'ready',
    url,
    at: toSharedClock(performance.now()),
    startedAt: toSharedClock(0),
    cpuMicros: cpu.user + cpu.system,
  });
}

export function reportFailure(error: unknown): never {
  const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
  send({ type: 'failed', message });
  console.error(message);
  process.exit(1);
}
