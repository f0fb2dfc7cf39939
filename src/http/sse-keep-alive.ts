import type { ServerResponse } from 'node:http';

/** The pings go out to one of this many groups per tick, never to every stream at once. */
const SLICES = 24;

/**
 * Keeps open SSE responses alive through proxies with a comment line (`:`) every `intervalMs`, from one
 * timer for all of them rather than one per stream. Each tick writes to one group, so a thousand streams
 * opened at once are not all pinged in the same turn of the event loop. A stream that is not draining is
 * skipped: it is not idle.
 */
export class SseKeepAlive {
  private readonly groups = Array.from({ length: SLICES }, () => new Set<ServerResponse>());
  private nextGroup = 0;
  private tick = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(intervalMs = 12_000) {
    this.timer = setInterval(() => this.ping(), Math.max(1, Math.floor(intervalMs / SLICES)));
    this.timer.unref();
  }

  /** Pings `res` until it closes. */
  add(res: ServerResponse): void {
    const group = this.groups[this.nextGroup++ % SLICES] as Set<ServerResponse>;
    group.add(res);
    res.once('close', () => group.delete(res));
  }

  /** Ends every stream still open and stops the timer. */
  close(): void {
    clearInterval(this.timer);
    for (const group of this.groups) {
      for (const res of group) res.end();
      group.clear();
    }
  }

  private ping(): void {
    const group = this.groups[this.tick++ % SLICES] as Set<ServerResponse>;
    for (const res of group) if (!res.writableNeedDrain) res.write(':\n\n');
  }
}
