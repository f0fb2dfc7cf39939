import type { IncomingMessage, ServerResponse } from 'node:http';
import helmet from 'helmet';

export type HeaderEntry = readonly [name: string, value: string | number | readonly string[]];

export interface SecurityHeaders {
  /** Sets them on `res`, for a response whose headers are set one by one (yoga, the routes). */
  setOn(res: ServerResponse): void;
  /** The same headers, for a response that gives all of its headers to writeHead at once (see sse-transport.ts). */
  readonly entries: readonly HeaderEntry[];
}

/**
 * Standard security headers on every HTTP response, whichever transport writes it (yoga, the lean SSE path,
 * the callback and health routes): set before any of them runs, except on a lean SSE stream, which writes
 * them with its own headers (`entries`). helmet's defaults, except: the content
 * security policy only forbids framing (GraphiQL's page runs inline scripts), and HSTS is sent only when the
 * gateway is reached over https.
 */
export function createSecurityHeaders(options: { https: boolean }): SecurityHeaders {
  const middleware = helmet({
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        defaultSrc: helmet.contentSecurityPolicy.dangerouslyDisableDefaultSrc,
        frameAncestors: ["'none'"],
      },
    },
    xFrameOptions: { action: 'deny' },
    strictTransportSecurity: options.https ? { maxAge: 31_536_000, includeSubDomains: true } : false,
  });
  // helmet's values here depend on the options alone (no directive is a function of the request), so they are
  // taken once from helmet itself and set as they are: running its thirteen middlewares on every request was
  // about 1.5% of a callback's CPU.
  const headers = new Map<string, HeaderEntry[1]>();
  const recorder = {
    setHeader: (name: string, value: HeaderEntry[1]) => headers.set(name, value),
    // Its one removal, X-Powered-By, is a header node:http never sets.
    removeHeader: () => {},
  };
  middleware({} as IncomingMessage, recorder as unknown as ServerResponse, () => {});
  const entries: HeaderEntry[] = [...headers];
  return {
    entries,
    setOn(res) {
      setHeaderEntries(res, entries);
    },
  };
}

/** Sets each of `entries` on `res`, one by one. */
export function setHeaderEntries(res: ServerResponse, entries: readonly HeaderEntry[]): void {
  for (const [name, value] of entries) res.setHeader(name, value);
}
