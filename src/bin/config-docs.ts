import { readFile, writeFile } from 'node:fs/promises';
import { envExample, withReadmeTable } from '../config-docs.js';

// Writes the README's configuration table and .env.example from the config schema; with --check, fails when
// either has drifted from it.
const files = [
  { url: new URL('../../README.md', import.meta.url), name: 'README.md', render: withReadmeTable },
  { url: new URL('../../.env.example', import.meta.url), name: '.env.example', render: () => envExample() },
];

const check = process.argv.includes('--check');
let drifted = false;
for (const file of files) {
  const committed = await readFile(file.url, 'utf8');
  const written = file.render(committed);
  if (written === committed) continue;
  if (check) {
    console.error(`${file.name} is out of date: run \`npm run config:docs\` and commit it`);
    drifted = true;
  } else {
    await writeFile(file.url, written);
    console.log(`wrote ${file.name}`);
  }
}
if (drifted) process.exit(1);
if (check) console.log('README.md and .env.example match the config schema');
