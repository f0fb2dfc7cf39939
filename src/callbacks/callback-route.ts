import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  answerKieCallback,
  CALLBACK_PATH_PREFIX,
  type CallbackAnswer,
  type CallbackRequest,
  callbackAnswerBody,
  type KieCallbackOptions,
} from './kie-callback.js';

/**
 * kie's callbacks on node's own request and response. Through yoga, each one was turned into a fetch
 * `Request`, passed by every plugin's request hook and piped back from a `Response`: a fifth of a callback's
 * CPU, on the event loop every live update shares. A callback needs none of it. Only kie's kind of request
 * is taken here, a POST without an Origin; anything else on the path (a browser's preflight or a request
 * with an Origin, which get CORS headers, another method) is left to the same answer as a yoga route.
 */
export function createKieCallbackRoute(options: KieCallbackOptions) {
  const pathOf = (req: IncomingMessage): string | undefined => {
    if (req.method !== 'POST' || req.headers.origin !== undefined) return undefined;
    if (!req.url?.startsWith(CALLBACK_PATH_PREFIX)) return undefined;
    // As yoga reads it: without the query, dot segments resolved.
    const { pathname } = new URL(req.url, 'http://gateway.invalid');
    return pathname.startsWith(CALLBACK_PATH_PREFIX) ? pathname : undefined;
  };
  return {
    handles: (req: IncomingMessage) => pathOf(req) !== undefined,
    async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
      const pathname = pathOf(req) ?? CALLBACK_PATH_PREFIX;
      const request: CallbackRequest = { method: 'POST', header: (name) => headerOf(req, name), body: req };
      let answered: CallbackAnswer;
      try {
        answered = await answerKieCallback(request, pathname, options);
      } catch (error) {
        // A body the sender cut off, say: everything after reading it answers for itself.
        options.logger.warn({ err: error }, 'kie callback could not be read');
        answered = { status: 500, message: 'the callback could not be read' };
      }
      if (res.headersSent || res.destroyed) return;
      const body = callbackAnswerBody(answered);
      res.writeHead(answered.status, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
      });
      res.end(body);
    },
  };
}

/** A header as fetch's `Headers.get` gives it: node joins repeated custom headers with ", " too. */
function headerOf(req: IncomingMessage, name: string): string | null {
  const value = req.headers[name];
  if (value === undefined) return null;
  return Array.isArray(value) ? value.join(', ') : value;
}
