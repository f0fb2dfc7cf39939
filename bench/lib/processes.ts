import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildMessage, ParentMessage } from './child.js';
import { fromSharedClock } from './shared-clock.js';

/**
 * Starting the server processes (the gateway launcher, the baselines) and talking to them over IPC. Servers
 * are pinned to core 0 and this process, the load generator, to core 1 when the machine has two cores, so
 * neither steals the other's CPU and the server's own cost is what the figures show.
 */

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
export const profileDir = path.join(repoRoot, 'bench/results/profiles');
const TASKSET = '/usr/bin/taskset';
const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 20_000;

export interface Pinning {
  /** Whether servers run on core 0 and the load generator on core 1. */
  pinned: boolean;
  cores: number;
}

let pinning: Pinning | undefined;

/** Pins this process (every thread of it) to core 1, once; a no-op on one core or without taskset. */
export function pinLoadGenerator(): Pinning {
  if (pinning) return pinning;
  const cores = availableParallelism();
  let pinned = false;
  if (cores >= 2 && existsSync(TASKSET)) {
    try {
      execFileSync(TASKSET, ['-a', '-cp', '1', String(process.pid)], { stdio: 'ignore' });
      pinned = true;
    } catch {
      // Not allowed here (a container without CAP_SYS_NICE): run unpinned, and say so in the results.
    }
  }
  pinning = { pinned, cores };
  return pinning;
}

export interface CpuSample {
  /** Microseconds of user + system CPU the process has used so far. */
  micros: number;
  /** This process's clock when the sample arrived. */
  at: number;
  /** The server's longest event-loop delay since its previous sample. */
  loopDelayMaxMs: number;
  /** Its major garbage collections since its previous sample. */
  majorGcs: number;
}

export interface ServerProcess {
  name: string;
  url: string;
  pid: number;
  /**
   * When it was ready, by its own clock (as this process's performance.now()), and its CPU until then: an
   * orchestrator busy with thousands of clients reads the message later (0.07-1.9 s in a reconnect storm of
   * 10,000 clients). `startedAt`: when its process started, by the same clock: from spawn() on, that busy
   * orchestrator's own delays would count too.
   */
  ready: { at: number; startedAt: number; cpuMicros: number };
  /** Where its CPU profiles go, when profiled; written when it stops. */
  profileDir: string | undefined;
  /** Runs the collector twice inside the process and returns its memory afterwards. */
  gc(): Promise<NodeJS.MemoryUsage>;
  /** Collects, then writes a V8 heap snapshot to bench/results/profiles; returns its path. */
  heapSnapshot(label: string): Promise<string>;
  cpu(): Promise<CpuSample>;
  stats<T>(): Promise<T>;
  /** Its memory now, without collecting first: what it holds at this moment, garbage included. */
  memory(): Promise<NodeJS.MemoryUsage>;
  stop(): Promise<void>;
  /** SIGKILL, as a crash: no drain, no goodbye to its clients; resolves once it is gone. */
  kill(): Promise<void>;
}

export interface StartOptions {
  /** A label for logs and profile files. */
  name: string;
  /** Script path relative to the repository root. */
  script: string;
  /** Handed to the process as BENCH_ENV; for the gateway it is the whole environment loadConfig sees. */
  env: Record<string, string>;
  /** Write a CPU profile of this process to bench/results/profiles. */
  profile?: boolean;
  /**
   * The cores it may run on when pinning (taskset's list): `0`, the default, for servers; `0,1` for a helper
   * that must not be starved by whichever side is busiest (a query-counting proxy, which every query of the
   * server waits on).
   */
  cores?: '0' | '0,1';
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

export async function startServer(options: StartOptions): Promise<ServerProcess> {
  const { pinned } = pinLoadGenerator();
  // TypeScript runs through tsx; the gateway's launcher is plain JavaScript (see bench/processes/gateway.mjs).
  const nodeArgs = options.script.endsWith('.ts') ? ['--expose-gc', '--import', 'tsx'] : ['--expose-gc'];
  // A server pinned to one core runs the way the image runs an instance (one per core, see the Dockerfile): with
  // V8's collector on the event loop's thread. Its helper threads would share that one core with the event loop,
  // and while they mark, callbacks wait (fan-out's p99 100-170 ms in a segment holding a major collection,
  // 8-12 ms with this flag). Gateway and baselines alike.
  if (pinned && (options.cores ?? '0') === '0') nodeArgs.unshift('--single-threaded-gc');
  let profileOut: string | undefined;
  if (options.profile) {
    // One directory per process: tsx's module hooks run on a thread of their own, which writes a profile too.
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    profileOut = path.join(profileDir, `${options.name}-${stamp}`);
    mkdirSync(profileOut, { recursive: true });
    nodeArgs.push('--cpu-prof', '--cpu-prof-dir', profileOut);
  }
  nodeArgs.push(path.join(repoRoot, options.script));
  const [command, args] = pinned
    ? [TASKSET, ['-c', options.cores ?? '0', process.execPath, ...nodeArgs]]
    : [process.execPath, nodeArgs];
  const child = spawn(command, args, {
    cwd: repoRoot,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, NODE_ENV: 'production', BENCH_ENV: JSON.stringify(options.env) },
  });
  live.add(child);
  child.once('exit', () => live.delete(child));

  let nextId = 1;
  const pending = new Map<number, (value: unknown) => void>();
  const readyMessage = await new Promise<Extract<ChildMessage, { type: 'ready' }>>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${options.name} did not start within 60 s`)),
      READY_TIMEOUT_MS,
    );
    const onExit = (code: number | null) => {
      clearTimeout(timer);
      reject(new Error(`${options.name} exited with ${code} before it was ready`));
    };
    child.once('exit', onExit);
    child.on('message', (message: ChildMessage) => {
      if (message.type === 'ready') {
        clearTimeout(timer);
        child.off('exit', onExit);
        resolve(message);
      } else if (message.type === 'failed') {
        clearTimeout(timer);
        reject(new Error(`${options.name} failed to start: ${message.message.split('\n')[0]}`));
      } else if (message.type === 'reply') {
        pending.get(message.id)?.(message.value);
        pending.delete(message.id);
      }
    });
  }).catch((error: unknown) => {
    child.kill('SIGKILL');
    throw error;
  });

  const request = <T>(type: ParentMessage['type'], fields: { file?: string } = {}): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      if (!child.connected) {
        reject(new Error(`${options.name} is gone`));
        return;
      }
      const id = nextId++;
      pending.set(id, resolve as (value: unknown) => void);
      child.send({ id, type, ...fields });
    });

  return {
    name: options.name,
    url: readyMessage.url,
    ready: {
      at: fromSharedClock(readyMessage.at),
      startedAt: fromSharedClock(readyMessage.startedAt),
      cpuMicros: readyMessage.cpuMicros,
    },
    profileDir: profileOut,
    pid: child.pid ?? -1,
    gc: () => request<NodeJS.MemoryUsage>('gc'),
    heapSnapshot(label) {
      mkdirSync(profileDir, { recursive: true });
      const stamp = new Date().toISOString().replace(/[:.]/g, '-');
      const file = path.join(profileDir, `${options.name}-${label}-${stamp}.heapsnapshot`);
      return request<string>('heapSnapshot', { file });
    },
    cpu: async () => {
      const sample = await request<{ cpu: NodeJS.CpuUsage; loopDelayMaxMs: number; majorGcs: number }>('cpu');
      const { cpu, loopDelayMaxMs, majorGcs } = sample;
      return { micros: cpu.user + cpu.system, at: performance.now(), loopDelayMaxMs, majorGcs };
    },
    stats: <T>() => request<T>('stats'),
    memory: () => request<NodeJS.MemoryUsage>('memory'),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      void request('stop').catch(() => {});
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    },
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Share of one core the process used between two samples. */
export function cpuShare(from: CpuSample, to: CpuSample): number {
  const wallMicros = (to.at - from.at) * 1000;
  return wallMicros > 0 ? (to.micros - from.micros) / wallMicros : Number.NaN;
}
