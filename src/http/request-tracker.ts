import type { IncomingMessage, Server, ServerResponse } from 'node:http';

/**
 * The requests a server is answering, so a draining shutdown can wait for the ones that end by themselves (a
 * mutation waiting on kie) and end the ones that never do (event streams).
 */
export class RequestTracker {
  private readonly open = new Set<ServerResponse>();
  private readonly idleWaiters = new Set<() => void>();

  constructor(server: Server) {
    // Registered before the handlers, so every request is counted from its start.
    server.prependListener('request', (_req: IncomingMessage, res: ServerResponse) => {
      if (this.closing) res.shouldKeepAlive = false;
      this.open.add(res);
      res.once('close', () => {
        this.open.delete(res);
        if (this.open.size === 0) for (const resolve of this.idleWaiters) resolve();
      });
    });
  }

  private closing = false;

  /**
   * From now on every connection closes after its answer: requests already on their way over a kept-alive
   * connection are still answered (closing idle connections at once would reset them unanswered), and no
   * client reuses the connection afterwards.
   */
  closeConnectionsAfterAnswers(): void {
    this.closing = true;
    for (const res of this.open) if (!res.headersSent) res.shouldKeepAlive = false;
  }

  get size(): number {
    return this.open.size;
  }

  /** Cuts every open event stream (yoga's and graphql-sse's); its client reconnects to another instance. */
  endStreams(): void {
    for (const res of this.open) {
      if (String(res.getHeader('content-type') ?? '').startsWith('text/event-stream')) res.destroy();
    }
  }

  /** Resolves once no request is open. */
  idle(): Promise<void> {
    if (this.open.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.idleWaiters.delete(done);
        resolve();
      };
      this.idleWaiters.add(done);
    });
  }
}
