import { Agent, request } from 'node:http';

/**
 * A lean keep-alive HTTP client for the load generator. fetch would do, but it costs several times more CPU
 * per request, and the load generator has one core to drive servers that also have one.
 */
const newAgent = () => new Agent({ keepAlive: true, maxSockets: 512 });
let agent = newAgent();

export interface HttpAnswer {
  status: number;
  body: string;
}

export function httpRequest(
  method: 'GET' | 'POST',
  url: string,
  body?: string,
  headers: Record<string, string> = {},
  retried = false,
): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const req = request(
      {
        agent,
        method,
        hostname: target.hostname,
        port: target.port,
        path: `${target.pathname}${target.search}`,
        headers: body === undefined ? headers : { ...headers, 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', (error: NodeJS.ErrnoException) => {
      // The server closed an idle keep-alive socket just as it was reused: the request never reached it, so
      // sending it again on a fresh socket is safe (Node's documented pattern).
      if (req.reusedSocket && error.code === 'ECONNRESET' && !retried) {
        httpRequest(method, url, body, headers, true).then(resolve, reject);
      } else reject(error);
    });
    req.end(body);
  });
}

export async function postJson(url: string, value: unknown, headers: Record<string, string> = {}) {
  return httpRequest('POST', url, JSON.stringify(value), { 'content-type': 'application/json', ...headers });
}

/** Ends idle keep-alive sockets between scenarios, so one scenario's connections do not reach the next server. */
export function closeIdleConnections(): void {
  agent.destroy();
  agent = newAgent();
}
