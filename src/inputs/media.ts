import { fileTypeFromBuffer } from 'file-type';
import { parseBuffer, parseFromTokenizer } from 'music-metadata';
import type { ITokenizer } from 'strtok3';

/**
 * What kie takes as a task's image and audio (UPSTREAM.md), judged by the bytes themselves: a file's name,
 * extension or declared type say nothing about what it is.
 */

export type MediaKind = 'image' | 'audio';

interface Accepted {
  /** file-type's extensions for the formats kie takes. */
  extensions: ReadonlySet<string>;
  description: string;
}

const accepted: Record<MediaKind, Accepted> = {
  image: { extensions: new Set(['jpg', 'png', 'webp']), description: 'a JPEG, PNG or WebP image' },
  // Opus is an Ogg stream too; file-type names it by its codec.
  audio: {
    extensions: new Set(['mp3', 'wav', 'aac', 'm4a', 'ogg', 'oga', 'opus']),
    description: 'an mp3, wav, aac, m4a or ogg recording',
  },
};

/** The limits one kind of input is held to. */
export interface MediaLimits {
  maxImageBytes: number;
  maxAudioBytes: number;
}

export const maxBytesFor = (kind: MediaKind, limits: MediaLimits) =>
  kind === 'image' ? limits.maxImageBytes : limits.maxAudioBytes;

/** An input that is not what kie takes; the message completes "<field> ..." for the person who sent it. */
export class MediaRejectedError extends Error {
  override name = 'MediaRejectedError';
}

export interface SniffedType {
  ext: string;
  mime: string;
}

/** Bytes enough for file-type to tell every format it knows. */
export const SNIFF_BYTES = 4100;

/** The real type of `head` (a file's first bytes), or a MediaRejectedError saying what it is instead. */
export async function sniffType(kind: MediaKind, head: Uint8Array): Promise<SniffedType> {
  const found = await fileTypeFromBuffer(head);
  const wanted = accepted[kind];
  if (found && wanted.extensions.has(found.ext)) return { ext: found.ext, mime: found.mime };
  const what = found ? `a ${found.mime} file` : head.byteLength === 0 ? 'empty' : 'of no media type (text?)';
  throw new MediaRejectedError(`must be ${wanted.description}, but its content is ${what}`);
}

export function checkSize(kind: MediaKind, size: number, limits: MediaLimits): void {
  const max = maxBytesFor(kind, limits);
  if (size > max) {
    throw new MediaRejectedError(`is ${formatBytes(size)}, over the ${formatBytes(max)} limit`);
  }
}

const formatBytes = (bytes: number) =>
  bytes >= 1_000_000 ? `${(bytes / 1_000_000).toFixed(1)} MB` : `${Math.ceil(bytes / 1000)} KB`;

/**
 * The audio's duration in seconds from its headers (music-metadata), without decoding it; undefined when the
 * headers do not say (an estimate is then not possible, the task still is).
 */
export async function audioDuration(
  source: { bytes: Uint8Array } | { tokenizer: ITokenizer },
  type: SniffedType,
): Promise<number | undefined> {
  try {
    const metadata =
      'bytes' in source
        ? await parseBuffer(source.bytes, { mimeType: type.mime, size: source.bytes.byteLength })
        : await parseFromTokenizer(source.tokenizer);
    const duration = metadata.format.duration;
    return duration !== undefined && Number.isFinite(duration) && duration > 0 ? duration : undefined;
  } catch {
    return undefined;
  }
}
