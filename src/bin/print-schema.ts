import { readFile, writeFile } from 'node:fs/promises';
import { lexicographicSortSchema, printSchema } from 'graphql';
import { schema } from '../graphql/schema.js';

// Writes schema/schema.graphql from the code; with --check, fails when the committed file has drifted.
const file = new URL('../../schema/schema.graphql', import.meta.url);
const printed = `${printSchema(lexicographicSortSchema(schema))}\n`;

if (process.argv.includes('--check')) {
  const committed = await readFile(file, 'utf8').catch(() => '');
  if (committed !== printed) {
    console.error('schema/schema.graphql is out of date: run `npm run schema:print` and commit it');
    process.exit(1);
  }
  console.log('schema/schema.graphql matches the code');
} else {
  await writeFile(file, printed);
  console.log('wrote schema/schema.graphql');
}
