import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { GuardedFetchError, type GuardedFetcher, type OpenedResponse } from '../inputs/ssrf-guard.js';

export interface Downloaded {
  sizeBytes: number;
  sha256: string;
  contentType: string;
}

/** A download that did not give the file; `linkDead` when a fresh link may (kie's expired URLs answer 403). */
export class DownloadError extends Error {
  override name = 'DownloadError';
  constructor(
    message: string,
    readonly linkDead = false,
  ) {
    super(message);
  }
}

const deadLinkStatuses = new Set([401, 403, 404, 410]);

/**
 * Streams `url` into `file`, hashing and counting on the way, and stops at `maxBytes` (declared or not).
 * The URL is kie's (from its callback or recordInfo), but a callback's body is not covered by kie's signature,
 * so it is fetched through the SSRF guard like a user's: it must not make the gateway reach its own network.
 */
export async function downloadToFile(
  fetcher: GuardedFetcher,
  url: string,
  file: string,
  options: { maxBytes: number; signal: AbortSignal },
): Promise<Downloaded> {
  let response: OpenedResponse;
  try {
    ({ response } = await fetcher.open(url, { signal: options.signal }));
  } catch (error) {
    if (error instanceof GuardedFetchError) throw new DownloadError(`the result URL ${error.message}`);
    throw error;
  }
  if (!response.ok || !response.body) {
    await response.body?.cancel().catch(() => {});
    throw new DownloadError(
      `the result URL answered ${response.status}`,
      deadLinkStatuses.has(response.status),
    );
  }
  const declared = Number(response.headers.get('content-length') ?? Number.NaN);
  if (declared > options.maxBytes) {
    await response.body.cancel().catch(() => {});
    throw new DownloadError(`the result is ${declared} bytes, over RESULT_MAX_BYTES (${options.maxBytes})`);
  }
  const hash = createHash('sha256');
  let sizeBytes = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      sizeBytes += chunk.length;
      if (sizeBytes > options.maxBytes) {
        done(new DownloadError(`the result is over RESULT_MAX_BYTES (${options.maxBytes})`));
        return;
      }
      hash.update(chunk);
      done(null, chunk);
    },
  });
  await pipeline(
    Readable.fromWeb(response.body as WebReadableStream<Uint8Array>),
    meter,
    createWriteStream(file),
    { signal: options.signal },
  );
  const declaredType = response.headers.get('content-type')?.split(';')[0]?.trim();
  return {
    sizeBytes,
    sha256: hash.digest('hex'),
    // kie's results are MP4; a CDN's generic type says nothing better.
    contentType: declaredType?.startsWith('video/') ? declaredType : 'video/mp4',
  };
}
