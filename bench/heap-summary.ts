/**
 * `npx tsx bench/heap-summary.ts <before.heapsnapshot> <after.heapsnapshot> [per] [top]`: what grew between two
 * heap snapshots written by `npm run bench -- --only memory --profile`, by kind of object (constructor name
 * for objects, function name for closures), in bytes and counts, divided by `per` (e.g. the number of
 * subscriptions opened in between), so the cost of one subscription can be read object by object.
 */
import { readFileSync } from 'node:fs';

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

interface Tally {
  count: number;
  bytes: number;
}

/** Self sizes and counts of every node, grouped by "type name". */
function tally(file: string): Map<string, Tally> {
  const heap = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  const fields = heap.snapshot.meta.node_fields;
  const typeNames = heap.snapshot.meta.node_types[0];
  const width = fields.length;
  const typeAt = fields.indexOf('type');
  const nameAt = fields.indexOf('name');
  const sizeAt = fields.indexOf('self_size');
  const groups = new Map<string, Tally>();
  for (let offset = 0; offset < heap.nodes.length; offset += width) {
    const type = typeNames[heap.nodes[offset + typeAt] as number] ?? '?';
    // Strings and numbers are named by their value: group them by type alone.
    const named = type === 'object' || type === 'closure' || type === 'native';
    const name = named ? (heap.strings[heap.nodes[offset + nameAt] as number] ?? '?') : '';
    const key = named ? `${type} ${name.slice(0, 60)}` : type;
    const group = groups.get(key) ?? { count: 0, bytes: 0 };
    group.count++;
    group.bytes += heap.nodes[offset + sizeAt] as number;
    groups.set(key, group);
  }
  return groups;
}

export function summarizeHeapGrowth(beforeFile: string, afterFile: string, per = 1, top = 40): string {
  const before = tally(beforeFile);
  const after = tally(afterFile);
  const growth = [...after].map(([key, grown]) => {
    const was = before.get(key) ?? { count: 0, bytes: 0 };
    return { key, count: (grown.count - was.count) / per, bytes: (grown.bytes - was.bytes) / per };
  });
  growth.sort((a, b) => b.bytes - a.bytes);
  const total = growth.reduce((sum, row) => sum + row.bytes, 0);
  const lines = [
    `heap growth${per > 1 ? ` per unit (÷${per})` : ''}: ${total.toFixed(0)} B`,
    '',
    '| bytes | count | kind |',
    '|---:|---:|---|',
    ...growth
      .slice(0, top)
      .map((row) => `| ${row.bytes.toFixed(0)} | ${row.count.toFixed(2)} | ${row.key} |`),
  ];
  return lines.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [before, after, per, top] = process.argv.slice(2);
  if (!before || !after) {
    console.error('usage: tsx bench/heap-summary.ts <before.heapsnapshot> <after.heapsnapshot> [per] [top]');
    process.exit(2);
  }
  console.log(summarizeHeapGrowth(before, after, Number(per ?? 1), Number(top ?? 40)));
}
