import { promisify } from 'node:util';
import zlib from 'node:zlib';
import Negotiator from 'negotiator';

const brotli = promisify(zlib.brotliCompress);
const gzip = promisify(zlib.gzip);

type Encoding = 'br' | 'gzip' | 'identity';

/** Preferred first: brotli is a fifth smaller than gzip on GraphiQL's page. */
const ENCODINGS: Encoding[] = ['br', 'gzip', 'identity'];

const encoders: Record<Exclude<Encoding, 'identity'>, (body: Buffer) => Promise<Buffer>> = {
  // Quality 5 of 11: near the best ratio for a few megabytes, in a second or two instead of tens.
  br: (body) =>
    brotli(body, {
      params: {
        [zlib.constants.BROTLI_PARAM_QUALITY]: 5,
        [zlib.constants.BROTLI_PARAM_SIZE_HINT]: body.length,
      },
    }),
  gzip: (body) => gzip(body, { level: 6 }),
};

/**
 * A large response that never changes while the process runs (GraphiQL's page), compressed once per encoding
 * on first demand, off the event loop, and answered in the encoding the request's Accept-Encoding prefers.
 * Not yoga's or whatwg-node's content-encoding plugin: that one compresses every response, SSE streams
 * too (which it would buffer), on every request, and inflates compressed request bodies past the body cap.
 */
export class CompressedAsset {
  private body: Promise<Buffer> | undefined;
  private readonly variants = new Map<Encoding, Promise<Buffer>>();

  constructor(
    private readonly render: () => Promise<Buffer>,
    private readonly headers: Record<string, string>,
  ) {}

  async respond(request: Request): Promise<Response> {
    const accepted = new Negotiator({
      headers: { 'accept-encoding': request.headers.get('accept-encoding') ?? undefined },
    }).encodings(ENCODINGS);
    const encoding = ENCODINGS.find((candidate) => accepted.includes(candidate)) ?? 'identity';
    const bytes = await this.variant(encoding);
    return new Response(new Uint8Array(bytes), {
      headers: {
        ...this.headers,
        vary: 'accept-encoding',
        'content-length': String(bytes.length),
        ...(encoding === 'identity' ? {} : { 'content-encoding': encoding }),
      },
    });
  }

  private variant(encoding: Encoding): Promise<Buffer> {
    let variant = this.variants.get(encoding);
    if (!variant) {
      this.body ??= this.render();
      const body = this.body;
      variant = encoding === 'identity' ? body : body.then((bytes) => encoders[encoding](bytes));
      // A failed render or compression is tried again by the next request, not remembered.
      variant.catch(() => {
        this.variants.delete(encoding);
        if (this.body === body) this.body = undefined;
      });
      this.variants.set(encoding, variant);
    }
    return variant;
  }
}
