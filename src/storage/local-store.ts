import { mkdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { RESULT_KEY_PATTERN, type ResultStore } from './result-store.js';
import type { UrlSigner } from './url-signer.js';

/** The path the gateway serves its folder's copies under (see media-route.ts). */
export const MEDIA_PATH_PREFIX = '/media/';

/** Copies in a folder (RESULT_STORAGE_DIR), served by the gateway itself through signed, expiring URLs. */
export class LocalResultStore implements ResultStore {
  readonly kind = 'local';
  readonly stagingDir: string;

  constructor(
    readonly directory: string,
    readonly signer: UrlSigner,
    private readonly publicUrl: () => string,
  ) {
    this.stagingDir = path.join(directory, '.staging');
  }

  /** The file of a key; undefined for anything that is not a key this store makes (no path tricks). */
  filePath(key: string): string | undefined {
    return RESULT_KEY_PATTERN.test(key) ? path.join(this.directory, key) : undefined;
  }

  async put(key: string, stagedFile: string, _contentType: string, signal: AbortSignal): Promise<void> {
    const target = this.existingKey(key);
    signal.throwIfAborted();
    await mkdir(path.dirname(target), { recursive: true });
    // A rename is atomic: a reader sees the whole file or none.
    await rename(stagedFile, target);
  }

  async url(key: string, ttlS: number): Promise<string> {
    // The key's shape is checked, but no path is built: a URL names the key, not the file.
    if (!RESULT_KEY_PATTERN.test(key)) throw new Error(`not a result key: ${key}`);
    return `${this.publicUrl()}${MEDIA_PATH_PREFIX}${key}?${this.signer.query(key, ttlS)}`;
  }

  async remove(key: string): Promise<void> {
    await rm(this.existingKey(key), { force: true });
  }

  async close(): Promise<void> {}

  private existingKey(key: string): string {
    const file = this.filePath(key);
    if (!file) throw new Error(`not a result key: ${key}`);
    return file;
  }
}
