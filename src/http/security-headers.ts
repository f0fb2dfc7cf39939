import type { IncomingMessage, ServerResponse } from 'node:http';
import helmet from 'helmet';

/**
 * Standard security headers on every HTTP response, whichever transport writes it (yoga, the lean SSE path,
 * the callback and health routes), set before any of them runs. helmet's defaults, except: the content
 * security policy only forbids framing (GraphiQL's page runs inline scripts), and HSTS is sent only when the
 * gateway is reached over https.
 */
export function createSecurityHeaders(options: { https: boolean }) {
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
  const headers = new Map<string, string | number | readonly string[]>();
  const recorder = {
    setHeader: (name: string, value: string | number | readonly string[]) => headers.set(name, value),
    // Its one removal, X-Powered-By, is a header node:http never sets.
    removeHeader: () => {},
  };
  middleware({} as IncomingMessage, recorder as unknown as ServerResponse, () => {});
  const fixed = [...headers];
  return (_req: IncomingMessage, res: ServerResponse): void => {
    for (const [name, value] of fixed) res.setHeader(name, value);
  };
}
