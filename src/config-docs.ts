import { z } from 'zod';
import { envSchema, variableDocs } from './config.js';

/**
 * The configuration's documentation, written from the schema in config.ts: the README's table and
 * .env.example list exactly the variables the gateway reads, with their real defaults, so neither can drift.
 * `npm run config:docs` writes both; a test checks they are what it would write.
 */

export interface ConfigVariable {
  name: string;
  /** The schema's own default, as the environment would spell it; undefined when the default is "unset". */
  defaultValue: string | undefined;
  /** The default as the README shows it. */
  defaultText: string;
  meaning: string;
  /** The value .env.example shows (commented out). */
  sample: string;
}

export function configVariables(): ConfigVariable[] {
  return Object.entries(envSchema.shape).map(([name, schema]) => {
    const doc = variableDocs.get(schema);
    if (!doc) throw new Error(`${name} has no documentation in config.ts (wrap it in documented(...))`);
    const defaultValue = schema instanceof z.ZodDefault ? String(schema.def.defaultValue) : undefined;
    return {
      name,
      defaultValue,
      defaultText: doc.defaultText ?? (defaultValue === undefined ? 'unset' : `\`${defaultValue}\``),
      meaning: doc.meaning,
      sample: doc.example ?? defaultValue ?? '',
    };
  });
}

export const README_TABLE_START =
  '<!-- config:start: written by `npm run config:docs` from src/config.ts -->';
export const README_TABLE_END = '<!-- config:end -->';

export function readmeTable(variables = configVariables()): string {
  const rows = variables.map(
    (variable) => `| \`${variable.name}\` | ${variable.defaultText} | ${variable.meaning} |`,
  );
  return ['| variable | default | meaning |', '|---|---|---|', ...rows].join('\n');
}

/** The README with its configuration table (between the markers) replaced by the schema's. */
export function withReadmeTable(readme: string, variables = configVariables()): string {
  const start = readme.indexOf(README_TABLE_START);
  const end = readme.indexOf(README_TABLE_END);
  if (start < 0 || end < start) {
    throw new Error(`README.md needs the markers ${README_TABLE_START} and ${README_TABLE_END}`);
  }
  return `${readme.slice(0, start + README_TABLE_START.length)}\n${readmeTable(variables)}\n${readme.slice(end)}`;
}

/** Markdown's backticks mean nothing in a shell comment. */
const plain = (text: string) => text.replaceAll('`', '');

export function envExample(variables = configVariables()): string {
  const lines = [
    '# avatar-gateway configuration, written by `npm run config:docs` from src/config.ts.',
    '# Copy to `.env` (docker compose reads it) and uncomment what you change. A commented-out line is unset,',
    '# which means its default; the value shown is the default, or an example where the default is unset.',
    '',
  ];
  for (const variable of variables) {
    const fallback = plain(variable.defaultText);
    const said = fallback.startsWith('unset') ? fallback : `default: ${fallback}`;
    lines.push(`# ${plain(variable.meaning)} (${said}).`, `# ${variable.name}=${variable.sample}`);
  }
  lines.push(
    '',
    '# docker-compose.yml only: the password of its own Postgres (avoid URL-reserved characters).',
    '# POSTGRES_PASSWORD=avatar_gateway',
  );
  return `${lines.join('\n')}\n`;
}
