import type { IncomingMessage } from 'node:http';
import { createGraphQLError, type Plugin } from 'graphql-yoga';

/** The same answer yoga gives to a body over its `maxRequestBodySize`, for the transports outside it. */
export function bodyTooLargeResponse(): { status: 413; headers: Record<string, string>; body: string } {
  return {
    status: 413,
    // The rest of an oversized body is not read: the connection goes with the answer.
    headers: { 'content-type': 'application/json; charset=utf-8', connection: 'close' },
    body: JSON.stringify({
      errors: [{ message: 'Request body too large', extensions: { code: 'REQUEST_ENTITY_TOO_LARGE' } }],
    }),
  };
}

const declaredLength = (value: string | null | undefined): number =>
  value != null && /^\d+$/.test(value) ? Number(value) : 0;

/**
 * A node request's body, or null as soon as it is known to be over `maxBytes` (a Content-Length over it, or
 * the bytes read so far): never more than the cap is held, chunked bodies included. Read with listeners that
 * are removed at the end, not `for await`: the async iterator leaves end-of-stream listeners (seven closures,
 * about 0.5 KB) on the request, which an SSE request keeps for as long as its stream is open.
 */
export function readNodeBody(req: IncomingMessage, maxBytes: number): Promise<Buffer | null> {
  if (declaredLength(req.headers['content-length']) > maxBytes) return Promise.resolve(null);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stop = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        stop();
        // Nothing more is kept: what still arrives is dropped until the refusal (Connection: close) is out.
        req.resume();
        resolve(null);
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      stop();
      resolve(Buffer.concat(chunks, size));
    };
    const onError = (error: Error) => {
      stop();
      reject(error);
    };
    const onClose = () => {
      stop();
      reject(new Error('The request closed before its body ended'));
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

/** The same for a fetch Request: its body as text, or null when over `maxBytes`. */
export async function readFetchBody(request: Request, maxBytes: number): Promise<string | null> {
  if (declaredLength(request.headers.get('content-length')) > maxBytes) return null;
  if (!request.body) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = request.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      void reader.cancel().catch(() => undefined);
      return null;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export interface RequestBodyLimits {
  /** A JSON (or any other non-multipart) GraphQL request. */
  maxBodyBytes: number;
  /** A multipart request (uploads): the files and the operation together. */
  maxMultipartBodyBytes: number;
}

const tooLarge = () =>
  createGraphQLError('Request body too large', {
    extensions: { http: { status: 413 }, code: 'REQUEST_ENTITY_TOO_LARGE' },
  });

const isMultipart = (request: Request) =>
  request.headers.get('content-type')?.toLowerCase().startsWith('multipart/form-data') ?? false;

/**
 * yoga's body cap, with a second, larger cap for multipart requests: yoga's own `maxRequestBodySize` is one
 * number for every content type and is not exported, and uploads need megabytes where an operation needs
 * kilobytes. Like yoga's, it refuses an over-long Content-Length at once and counts a body as it streams
 * (chunked ones too), so no more than the cap is ever read. Inside a multipart request the `operations` and
 * `map` fields are held to the plain cap, so the operation itself is no larger than a JSON request's, and
 * at most two files (image and audio) are taken.
 */
export function useRequestBodyLimits(limits: RequestBodyLimits): Plugin {
  return {
    onRequestParse({ request, requestParser, setRequestParser, fetchAPI }) {
      const multipart = isMultipart(request);
      const limit = multipart ? limits.maxMultipartBodyBytes : limits.maxBodyBytes;
      const length = request.headers.get('content-length');
      if (length != null) {
        if (!/^\d+$/.test(length)) {
          throw createGraphQLError('Content-Length header is invalid.', {
            extensions: { http: { status: 400 }, code: 'BAD_REQUEST' },
          });
        }
        if (Number(length) > limit) throw tooLarge();
        // Nothing left to count: node's HTTP parser hands on no more body than Content-Length declares (and
        // refuses a request that also says Transfer-Encoding). Counting it anyway, through a TransformStream
        // and a second Request, was about a fifth of a history page's CPU (`npm run bench -- --only
        // history`: pages/s 0.27x of the baseline before, 0.33-0.35x after). Multipart requests still get
        // the second Request, for its form-data limits.
        if (!multipart) return;
      }
      if (requestParser == null || request.body == null) return;
      const parse = requestParser;
      setRequestParser(async (incoming) => {
        let exceeded = false;
        let bytesRead = 0;
        const body = incoming.body as ReadableStream<Uint8Array>;
        // The native stream and the ponyfill's TransformStream do not mix (yoga works around the same).
        const Transform =
          body instanceof ReadableStream ? globalThis.TransformStream : fetchAPI.TransformStream;
        const limited = body.pipeThrough(
          new Transform<Uint8Array, Uint8Array>({
            transform(chunk, controller) {
              bytesRead += chunk.byteLength;
              if (bytesRead > limit) {
                exceeded = true;
                controller.error(tooLarge());
                return;
              }
              controller.enqueue(chunk);
            },
          }),
        );
        const bounded = new fetchAPI.Request(incoming.url, {
          method: incoming.method,
          headers: incoming.headers,
          signal: incoming.signal,
          body: limited,
          // @ts-expect-error Node's fetch needs it for a streamed body; lib.dom does not know it.
          duplex: 'half',
          ...(multipart
            ? { formDataLimits: { fieldSize: limits.maxBodyBytes, fields: 2, files: 2, parts: 4 } }
            : {}),
        });
        try {
          return await parse(bounded);
        } catch (error) {
          // yoga's multipart parser reports any stream error as bad multipart data (400); this one is 413.
          if (exceeded) throw tooLarge();
          throw error;
        }
      });
    },
  };
}
