import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { Plugin } from 'graphql-yoga';
import { bodyTooLargeResponse, readFetchBody } from './request-body.js';
import { useRoute } from './routes.js';

export const DEMO_PATH = '/demo';

/** Who the page signs in as when it asks for a development token; the page lets a visitor choose. */
const userIdPattern = /^[A-Za-z0-9._-]{1,64}$/;
const DEMO_TOKEN_LIFETIME = '1h';
/** `{"user": "..."}` fits many times over. */
const MAX_TOKEN_REQUEST_BYTES = 1024;

/**
 * The page's own policy, stricter than the gateway's default (which only forbids framing): scripts, styles
 * and connections from this origin only, so the page runs nothing it did not ship. Videos may come from kie's
 * storage (https), or from the built-in simulator at the gateway's PUBLIC_URL, which need not be the origin
 * the page was opened on (localhost against 127.0.0.1).
 */
function demoPolicy(publicOrigin: string): string {
  return [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    `media-src 'self' https: ${publicOrigin}`,
    // 'self' covers the same origin's ws: and wss: in CSP Level 3.
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
}

interface DemoFile {
  path: string | URL;
  type: string;
}

const require = createRequire(import.meta.url);
const files: Record<string, DemoFile> = {
  '': { path: new URL('../../public/demo/index.html', import.meta.url), type: 'text/html; charset=utf-8' },
  '/demo.js': { path: new URL('../../public/demo/demo.js', import.meta.url), type: 'text/javascript' },
  '/demo.css': { path: new URL('../../public/demo/demo.css', import.meta.url), type: 'text/css' },
  // graphql-ws's own browser build (a classic script that defines `graphqlWs`), served from the package; its
  // exports map names no such file, so it is found beside the package's entry point.
  '/graphql-ws.js': {
    path: path.join(path.dirname(require.resolve('graphql-ws')), '../umd/graphql-ws.min.js'),
    type: 'text/javascript',
  },
};

export interface DemoOptions {
  /** The gateway's PUBLIC_URL, where the built-in simulator's videos are. */
  publicUrl: string;
  /** Development mode only: the page can ask for a token instead of having one pasted. */
  signDevelopmentToken: ((userId: string, expiresIn?: string) => Promise<string>) | undefined;
}

/**
 * The live demo page at /demo: static files from public/demo (no build step), and in development mode a
 * token for a user of the visitor's choosing. A JSON body is required, so another site's page cannot have a
 * browser ask without a CORS preflight, which the gateway's CORS policy answers.
 */
export function useDemoRoutes(options: DemoOptions): Plugin {
  const policy = demoPolicy(new URL(options.publicUrl).origin);
  const cache = new Map<string, Promise<Buffer>>();
  const read = (file: DemoFile) => {
    const key = String(file.path);
    let content = cache.get(key);
    if (!content) {
      content = readFile(file.path);
      // A failed read is not kept: the next request tries again.
      content.catch(() => cache.delete(key));
      cache.set(key, content);
    }
    return content;
  };
  return useRoute(
    (path) => path === DEMO_PATH || path.startsWith(`${DEMO_PATH}/`),
    async (request, path) => {
      const rest = path.slice(DEMO_PATH.length);
      if (rest === '/token') return developmentToken(request, options);
      const file = files[rest === '/' ? '' : rest];
      if (!file || (request.method !== 'GET' && request.method !== 'HEAD')) {
        return new Response('Not found', { status: 404 });
      }
      return new Response(new Uint8Array(await read(file)), {
        headers: {
          'content-type': file.type,
          'content-security-policy': policy,
          'cache-control': 'no-cache',
        },
      });
    },
  );
}

async function developmentToken(request: Request, options: DemoOptions): Promise<Response> {
  const refuse = (status: number, code: string, message: string) =>
    Response.json({ error: { code, message } }, { status });
  if (!options.signDevelopmentToken) {
    return refuse(404, 'NOT_FOUND', 'development tokens exist in development mode only; paste a token');
  }
  if (request.method !== 'POST') return refuse(405, 'METHOD_NOT_ALLOWED', 'POST {"user": "<id>"}');
  if (!request.headers.get('content-type')?.startsWith('application/json')) {
    return refuse(415, 'UNSUPPORTED_MEDIA_TYPE', 'send a JSON body: {"user": "<id>"}');
  }
  const text = await readFetchBody(request, MAX_TOKEN_REQUEST_BYTES);
  if (text === null) {
    const { status, headers, body } = bodyTooLargeResponse();
    return new Response(body, { status, headers });
  }
  const body = parseJson(text);
  const user = body && typeof body === 'object' && 'user' in body ? body.user : undefined;
  if (typeof user !== 'string' || !userIdPattern.test(user)) {
    return refuse(400, 'INVALID_INPUT', 'user must be 1 to 64 letters, digits, dots, dashes or underscores');
  }
  return Response.json({ token: await options.signDevelopmentToken(user, DEMO_TOKEN_LIFETIME) });
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
