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
  return (req: IncomingMessage, res: ServerResponse): void => {
    middleware(req, res, () => {});
  };
}
