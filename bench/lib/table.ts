import type { ResultRow } from '../scenarios/types.js';

/** The results as a Markdown table, for stdout and the README. */

function figure(value: number | null, unit: string): string {
  if (value === null || Number.isNaN(value)) return '—';
  const digits = Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2;
  const text = value.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: 0 });
  return unit ? `${text} ${unit}` : text;
}

export function markdownTable(rows: readonly ResultRow[]): string {
  const header = ['scenario', 'metric', 'gateway', 'baseline', 'ratio', 'target', 'result'];
  const lines = rows.map((row) => [
    row.scenario,
    row.metric,
    figure(row.gateway, row.unit),
    figure(row.baseline, row.unit),
    row.ratio === null ? '—' : `${figure(row.ratio, '')}x`,
    row.target,
    row.pass === null ? 'info' : row.pass ? 'pass' : '**miss**',
  ]);
  const escapeCell = (cell: string) => cell.replace(/\|/g, '\\|');
  return [
    `| ${header.join(' | ')} |`,
    `|${header.map(() => '---').join('|')}|`,
    ...lines.map((cells) => `| ${cells.map(escapeCell).join(' | ')} |`),
  ].join('\n');
}

export function notes(rows: readonly ResultRow[]): string {
  return rows
    .filter((row) => row.note)
    .map((row) => `- ${row.scenario} / ${row.metric}: ${row.note}`)
    .join('\n');
}
