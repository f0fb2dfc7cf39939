import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';

/** 256 bits, base64url without padding. */
const SECRET_LENGTH = 43;

/**
 * A random secret kept in DATA_DIR under `name`, made on first use, so what it signs (development tokens,
 * result URLs) stays valid across restarts of the same checkout. Two instances starting at once agree: the
 * file is created exclusively, and the one that loses the race reads the winner's.
 */
export async function loadDataDirSecret(dataDir: string, name: string): Promise<Uint8Array> {
  const file = path.resolve(dataDir, name);
  const existing = await readSecret(file);
  if (existing) return existing;
  await mkdir(path.dirname(file), { recursive: true });
  const secret = randomBytes(32).toString('base64url');
  try {
    await writeFile(file, `${secret}\n`, { mode: 0o600, flag: 'wx' });
  } catch (error) {
    const raced = (error as NodeJS.ErrnoException).code === 'EEXIST' ? await readSecret(file) : undefined;
    if (raced) return raced;
    // A file too short to be a secret (truncated by a crash): replaced.
    await writeFile(file, `${secret}\n`, { mode: 0o600, flag: 'w' });
  }
  return new TextEncoder().encode(secret);
}

async function readSecret(file: string): Promise<Uint8Array | undefined> {
  try {
    const existing = (await readFile(file, 'utf8')).trim();
    return existing.length >= SECRET_LENGTH ? new TextEncoder().encode(existing) : undefined;
  } catch {
    return undefined;
  }
}
