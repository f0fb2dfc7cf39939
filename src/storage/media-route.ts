import type { IncomingMessage, ServerResponse } from 'node:http';
import send from 'send';
import { type LocalResultStore, MEDIA_PATH_PREFIX } from './local-store.js';

interface Refusal {
  status: number;
  code: string;
  message: string;
}

function refuse(res: ServerResponse, { status, code, message }: Refusal): void {
  const body = JSON.stringify({ error: { code, message } });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** Why a request for `key` is not served, or undefined when it is. */
function refusalOf(
  store: LocalResultStore,
  req: IncomingMessage,
  key: string,
  url: URL,
): Refusal | undefined {
  if (!store.filePath(key)) return { status: 404, code: 'NOT_FOUND', message: 'No such result' };
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    return { status: 405, code: 'METHOD_NOT_ALLOWED', message: 'Results are read with GET or HEAD' };
  }
  const verdict = store.signer.verify(
    key,
    url.searchParams.get('expires'),
    url.searchParams.get('signature'),
  );
  if (verdict === 'invalid') {
    return {
      status: 403,
      code: 'INVALID_SIGNATURE',
      message: 'This result URL is not valid: its signature does not match',
    };
  }
  if (verdict === 'expired') {
    return {
      status: 410,
      code: 'URL_EXPIRED',
      message: 'This result URL has expired: read the task again for a fresh one',
    };
  }
  return undefined;
}

/**
 * Serves the folder's copies at `/media/<taskId>/<n>.mp4?expires=…&signature=…`: a URL whose signature does
 * not match is 403, one past its expiry 410, each with a JSON body naming why. `send` (Express's static file
 * module) does the rest: Range requests, so players can seek; HEAD; Content-Type and Content-Length; ETag.
 */
export function createMediaRoute(store: LocalResultStore) {
  return {
    handles: (req: IncomingMessage) => req.url?.startsWith(MEDIA_PATH_PREFIX) ?? false,
    serve(req: IncomingMessage, res: ServerResponse): void {
      const url = new URL(req.url ?? '/', 'http://gateway.invalid');
      const key = url.pathname.slice(MEDIA_PATH_PREFIX.length);
      const refusal = refusalOf(store, req, key, url);
      if (refusal) {
        if (refusal.status === 405) res.setHeader('allow', 'GET, HEAD');
        refuse(res, refusal);
        return;
      }
      const secondsLeft = Math.max(
        0,
        Number(url.searchParams.get('expires')) - Math.floor(Date.now() / 1000),
      );
      // Relative to the folder: `send` refuses dot segments, and the default DATA_DIR is `.data`.
      send(req, `/${key}`, { root: store.directory, dotfiles: 'deny', index: false, cacheControl: false })
        .on('headers', (response: ServerResponse) => {
          // Cached no longer than the URL is valid; private: the URL itself is the credential.
          response.setHeader('cache-control', `private, max-age=${secondsLeft}`);
        })
        .on('error', (error: { status?: number }) => {
          refuse(
            res,
            error.status === 404
              ? { status: 404, code: 'NOT_FOUND', message: 'No such result (removed after its retention)' }
              : { status: error.status ?? 500, code: 'UNREADABLE', message: 'The result could not be read' },
          );
        })
        .pipe(res);
    },
  };
}
