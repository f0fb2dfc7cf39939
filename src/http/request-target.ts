import type { IncomingMessage, ServerResponse } from 'node:http';

/** A Host header as RFC 9110 allows it: a name, an IPv4 or a bracketed IPv6 address, and an optional port. */
const HOST_HEADER = /^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

/**
 * True when the request can be routed on its path alone. whatwg-node (under yoga) and the lean SSE path build
 * the request's URL as `http://${Host}${target}`, so a Host such as `x/metrics?` would move the path into the
 * query string and route `/graphql` to `/metrics`. Only a well-formed Host and an origin-form target (`/...`)
 * are let through; anything else is a client error before any route sees it.
 */
export function hasRoutableTarget(req: IncomingMessage): boolean {
  const host = req.headers.host;
  if (host !== undefined && !HOST_HEADER.test(host)) return false;
  return (req.url ?? '').startsWith('/');
}

export function refuseUnroutable(res: ServerResponse): void {
  res.writeHead(400, { 'Content-Type': 'text/plain; charset=utf-8', Connection: 'close' });
  res.end('Bad request: malformed Host header or request target\n');
}
