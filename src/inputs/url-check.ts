import { type IRangeRequestClient, parseContentRange, tokenizer } from '@tokenizer/range';
import {
  audioDuration,
  checkSize,
  type MediaKind,
  type MediaLimits,
  MediaRejectedError,
  SNIFF_BYTES,
  sniffType,
} from './media.js';
import { GuardedFetchError, type GuardedFetcher, type GuardedResponse } from './ssrf-guard.js';

export interface CheckedUrl {
  /** The size the server declared (Content-Range or Content-Length), when it did. */
  size: number | undefined;
  mime: string;
  /** Audio only, when its headers tell it. */
  durationSeconds: number | undefined;
}

export interface UrlCheckOptions extends MediaLimits {
  /** Every byte read for one URL, over all its range requests together. */
  maxBytes: number;
  /** The whole check of one URL, every request together. */
  timeoutMs: number;
}

/**
 * What kie would find at a URL input, found before kie is paid: that it answers, with the right kind of
 * content (sniffed from its first bytes), within kie's size limit, and for audio how long it is. Only the
 * bytes the headers need are read, through range requests: the first few KB, then wherever the format keeps
 * its duration (music-metadata asks, @tokenizer/range fetches).
 */
export async function checkMediaUrl(
  fetcher: GuardedFetcher,
  kind: MediaKind,
  url: string,
  options: UrlCheckOptions,
): Promise<CheckedUrl> {
  // One deadline and one byte budget for every request the check makes.
  const budget = new ByteBudget(options.maxBytes, AbortSignal.timeout(options.timeoutMs));
  const first = await rangeGet(fetcher, url, 0, SNIFF_BYTES - 1, budget);
  const size = declaredSize(first);
  if (size !== undefined) checkSize(kind, size, options);
  const type = await sniffType(kind, first.bytes);
  if (kind === 'image') return { size, mime: type.mime, durationSeconds: undefined };

  let durationSeconds: number | undefined;
  if (first.complete && (first.status === 200 || size === first.bytes.byteLength)) {
    durationSeconds = await audioDuration({ bytes: first.bytes }, type);
  } else if (first.status === 206 && size !== undefined) {
    const client = rangeClient(fetcher, url, budget, type.mime);
    durationSeconds = await audioDuration(
      { tokenizer: await tokenizer(client, { avoidHeadRequests: true, initialChunkSize: SNIFF_BYTES }) },
      type,
    );
  }
  // A server that ignores ranges sent more than the budget: the duration stays unknown rather than read whole.
  return { size, mime: type.mime, durationSeconds };
}

/** Counts what one check reads, so a format that sends the parser all over a large file stops at the cap. */
class ByteBudget {
  private used = 0;
  constructor(
    private readonly max: number,
    readonly signal: AbortSignal,
  ) {}
  remaining(): number {
    return this.max - this.used;
  }
  spend(bytes: number): void {
    this.used += bytes;
  }
}

async function rangeGet(
  fetcher: GuardedFetcher,
  url: string,
  start: number,
  end: number,
  budget: ByteBudget,
): Promise<GuardedResponse> {
  if (budget.remaining() <= 0) throw new MediaRejectedError('needs more bytes read than the check allows');
  let response: GuardedResponse;
  try {
    response = await fetcher.get(url, {
      headers: { range: `bytes=${start}-${end}` },
      maxBytes: budget.remaining(),
      signal: budget.signal,
    });
  } catch (error) {
    if (error instanceof GuardedFetchError) throw new MediaRejectedError(error.message);
    throw error;
  }
  budget.spend(response.bytes.byteLength);
  if (response.status !== 200 && response.status !== 206) {
    throw new MediaRejectedError(`could not be downloaded: the server answered HTTP ${response.status}`);
  }
  return response;
}

function declaredSize(response: GuardedResponse): number | undefined {
  const range = response.headers.get('content-range');
  if (response.status === 206 && range) return parseContentRange(range).instanceLength;
  const length = response.headers.get('content-length');
  if (length && /^\d+$/.test(length)) return Number(length);
  return response.complete ? response.bytes.byteLength : undefined;
}

/** @tokenizer/range's view of the URL: every range it asks for goes through the guard and the budget. */
function rangeClient(
  fetcher: GuardedFetcher,
  url: string,
  budget: ByteBudget,
  mime: string,
): IRangeRequestClient {
  return {
    async getResponse(_method, range) {
      const [start, end] = range ?? [0, SNIFF_BYTES - 1];
      const response = await rangeGet(fetcher, url, start, end, budget);
      const contentRange = response.headers.get('content-range');
      return {
        // Only the first answer's size is used (the tokenizer was made because it is known).
        size: declaredSize(response) ?? 0,
        mimeType: mime,
        acceptPartialRequests: response.status === 206,
        ...(contentRange ? { contentRange: parseContentRange(contentRange) } : {}),
        arrayBuffer: async () => response.bytes,
      };
    },
    abort() {},
  };
}
