/**
 * `npx tsx bench/profile-summary.ts <file.cpuprofile> [top]`: where a CPU profile written by `npm run bench --
 * --profile` spent its time, by function (self time) and by package, so a bottleneck can be named.
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

function owner(url: string): string {
  if (!url) return '(native / idle / gc)';
  if (url.startsWith('node:')) return 'node internals';
  const modules = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (modules?.[1]) return modules[1];
  const local = /\/(src|bench)\/(.+)$/.exec(url);
  return local ? `${local[1]}/${local[2]}` : url;
}

export function summarizeProfile(file: string, top = 25): string {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const selfMicros = new Map<number, number>();
  profile.samples.forEach((id, index) => {
    selfMicros.set(id, (selfMicros.get(id) ?? 0) + (profile.timeDeltas[index] ?? 0));
  });
  const byFunction = new Map<string, number>();
  const byOwner = new Map<string, number>();
  // Node's internals and native code charged to the nearest package or source file that called them: what
  // each library costs in all.
  const byCaller = new Map<string, number>();
  const parentOf = new Map<number, number>();
  const nodeById = new Map<number, ProfileNode>();
  for (const node of profile.nodes) {
    nodeById.set(node.id, node);
    for (const child of node.children ?? []) parentOf.set(child, node.id);
  }
  const callerOf = (id: number): string => {
    const leaf = nodeById.get(id);
    if (leaf && !leaf.callFrame.url) {
      const name = leaf.callFrame.functionName;
      if (name === '(idle)' || name === '(garbage collector)' || name === '(program)') return name;
    }
    for (let current: number | undefined = id; current !== undefined; current = parentOf.get(current)) {
      const url = nodeById.get(current)?.callFrame.url ?? '';
      if (url && !url.startsWith('node:')) return owner(url);
    }
    return 'node internals (no caller)';
  };
  let total = 0;
  for (const node of profile.nodes) {
    const micros = selfMicros.get(node.id) ?? 0;
    total += micros;
    const { functionName, url, lineNumber } = node.callFrame;
    const where = owner(url);
    const name = `${functionName || '(anonymous)'} ${where}${url ? `:${lineNumber + 1}` : ''}`;
    byFunction.set(name, (byFunction.get(name) ?? 0) + micros);
    byOwner.set(where, (byOwner.get(where) ?? 0) + micros);
    if (micros > 0) {
      const caller = callerOf(node.id);
      byCaller.set(caller, (byCaller.get(caller) ?? 0) + micros);
    }
  }
  const share = (micros: number) => `${((micros / total) * 100).toFixed(1).padStart(5)}%`;
  const list = (map: Map<string, number>) =>
    [...map.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, micros]) => `${share(micros)}  ${name}`)
      .join('\n');
  return [
    `${file}: ${(total / 1e6).toFixed(1)} s sampled`,
    '',
    'time by package, with the node internals it called:',
    list(byCaller),
    '',
    'self time by package:',
    list(byOwner),
    '',
    'self time by function:',
    list(byFunction),
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [file, top] = process.argv.slice(2);
  if (!file) {
    console.error('usage: tsx bench/profile-summary.ts <file.cpuprofile> [top]');
    process.exit(2);
  }
  console.log(summarizeProfile(file, Number(top ?? 25)));
}
