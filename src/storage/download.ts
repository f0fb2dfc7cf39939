import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';

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
 * The URL is kie's (from its callback or recordInfo), not a user's: only http(s) is fetched. It does not
 * go through the input URL guard (inputs/ssrf-guard.ts) yet, which reads whole bodies into memory; a
 * streaming read there would let it.
 */
export async function downloadToFile(
  url: string,
  file: string,
  options: { maxBytes: number; signal: AbortSignal },
): Promise<Downloaded> {
  const { protocol } = new URL(url);
  if (protocol !== 'http:' && protocol !== 'https:')
    throw new DownloadError(`not an http(s) URL: ${protocol}`);
  const response = await fetch(url, { signal: options.signal, redirect: 'follow' });
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
