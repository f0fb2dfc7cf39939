import path from 'node:path';
import type { Config } from '../config.js';
import { loadDataDirSecret } from '../data-dir-secret.js';
import { LocalResultStore } from './local-store.js';
import type { ResultStore } from './result-store.js';
import { UrlSigner } from './url-signer.js';

/** The store RESULT_STORAGE names; undefined for `none`. The S3 SDK is loaded only when it is used. */
export async function openResultStore(
  config: Pick<Config, 'storage' | 'dataDir'>,
  publicUrl: () => string,
): Promise<ResultStore | undefined> {
  const { backend, signingKey } = config.storage;
  if (backend.kind === 'none') return undefined;
  if (backend.kind === 's3') {
    const { S3ResultStore } = await import('./s3-store.js');
    return new S3ResultStore(backend, path.join(config.dataDir, 'staging'));
  }
  const key = signingKey
    ? new TextEncoder().encode(signingKey)
    : await loadDataDirSecret(config.dataDir, 'result-url-key');
  return new LocalResultStore(backend.directory, new UrlSigner(key), publicUrl);
}
