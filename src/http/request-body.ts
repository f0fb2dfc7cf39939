import type { IncomingMessage } from 'node:http';

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
 * the bytes read so far): never more than the cap is held, chunked bodies included.
 */
export async function readNodeBody(req: IncomingMessage, maxBytes: number): Promise<Buffer | null> {
  if (declaredLength(req.headers['content-length']) > maxBytes) return null;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) return null;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
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
