import { createHash, randomUUID } from 'node:crypto';
import type { KieUpload } from '../upstream/kie-client.js';
import {
  audioDuration,
  checkSize,
  type MediaKind,
  type MediaLimits,
  MediaRejectedError,
  SNIFF_BYTES,
  sniffType,
} from './media.js';
import { GuardedFetcher } from './ssrf-guard.js';
import { checkMediaUrl } from './url-check.js';

/** A file a client sent in a multipart create: the web File yoga parsed, or anything shaped like it. */
export interface UploadedFile {
  readonly size: number;
  arrayBuffer(): Promise<ArrayBuffer>;
}

/** An upload that passed: its bytes, what they are, and their hash (an idempotent retry sends the same). */
export interface InspectedUpload {
  upload: KieUpload;
  sha256: string;
  durationSeconds: number | undefined;
}

export interface InputMediaOptions extends MediaLimits {
  /** false: URL inputs go to kie unchecked (CHECK_INPUT_URLS). */
  checkUrls: boolean;
  /** The SSRF guard lets private addresses through (ALLOW_PRIVATE_INPUT_URLS). */
  allowPrivate: boolean;
  checkTimeoutMs: number;
  checkMaxBytes: number;
  checkMaxRedirects: number;
}

export { MediaRejectedError };

/**
 * What a task's image and audio are, found before kie is paid for them: uploads from their bytes, URL inputs
 * through the SSRF guard. A MediaRejectedError says why an input is not what kie takes.
 */
export class InputMedia {
  private readonly fetcher: GuardedFetcher;

  constructor(private readonly options: InputMediaOptions) {
    this.fetcher = new GuardedFetcher({
      allowPrivate: options.allowPrivate,
      timeoutMs: options.checkTimeoutMs,
      maxBytes: options.checkMaxBytes,
      maxRedirects: options.checkMaxRedirects,
    });
  }

  /** The audio's duration where it is known; undefined when checks are off. */
  async checkUrl(kind: MediaKind, url: string): Promise<{ durationSeconds: number | undefined } | undefined> {
    if (!this.options.checkUrls) return undefined;
    const checked = await checkMediaUrl(this.fetcher, kind, url, {
      ...this.options,
      maxBytes: this.options.checkMaxBytes,
      timeoutMs: this.options.checkTimeoutMs,
    });
    return { durationSeconds: checked.durationSeconds };
  }

  /** Size first (before reading it), then the sniffed type, then the duration from the bytes. */
  async inspectUpload(kind: MediaKind, file: UploadedFile): Promise<InspectedUpload> {
    checkSize(kind, file.size, this.options);
    const bytes = new Uint8Array(await file.arrayBuffer());
    checkSize(kind, bytes.byteLength, this.options);
    const type = await sniffType(kind, bytes.subarray(0, SNIFF_BYTES));
    return {
      upload: { bytes, mimeType: type.mime, fileName: `${randomUUID()}.${type.ext}` },
      sha256: createHash('sha256').update(bytes).digest('hex'),
      durationSeconds: kind === 'audio' ? await audioDuration({ bytes }, type) : undefined,
    };
  }

  async close(): Promise<void> {
    await this.fetcher.close();
  }
}
