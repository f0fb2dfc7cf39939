import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from './processes.js';

/** What the figures were measured on: the commit, the versions that matter and the machine. */

function git(...args: string[]): string | null {
  try {
    return execFileSync('git', args, {
      cwd: repoRoot,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch {
    return null;
  }
}

function packageVersion(name: string): string | null {
  try {
    const file = path.join(repoRoot, 'node_modules', name, 'package.json');
    return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
  } catch {
    return null;
  }
}

export function describeMachine(pinned: boolean) {
  const status = git('status', '--porcelain', '--untracked-files=no');
  return {
    commit: git('rev-parse', 'HEAD'),
    /** Tracked files differed from the commit when the bench ran. */
    dirty: status === null ? null : status.length > 0,
    node: process.version,
    packages: Object.fromEntries(
      ['graphql-yoga', 'graphql-ws', 'graphql', 'drizzle-orm', 'postgres', 'ws'].map((name) => [
        name,
        packageVersion(name),
      ]),
    ),
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.availableParallelism(),
    memoryBytes: os.totalmem(),
    platform: `${os.platform()} ${os.release()}`,
    pinned,
  };
}
