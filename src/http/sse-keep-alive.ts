import type { ServerResponse } from 'node:http';
import { SlicedRounds } from './sliced-rounds.js';

/**
 * Keeps open SSE responses alive through proxies with a comment line (`:`) every `intervalMs`, from one
 * shared timer that writes to a slice of the streams per tick (`SlicedRounds`), so a thousand streams opened
 * at once are not all pinged in the same turn of the event loop. A stream that is not draining is skipped:
 * it is not idle.
 */
export class SseKeepAlive {
  private readonly rounds: SlicedRounds<ServerResponse>;
  // One listener for every stream (`this` is the response), not a closure per stream.
  private readonly onClose: (this: ServerResponse) => void;

  constructor(intervalMs = 12_000) {
    const rounds = new SlicedRounds<ServerResponse>(intervalMs, (res) => {
      // An ended stream may stay open a while (a slow reader taking its backlog): nothing more is written.
      if (!res.writableNeedDrain && !res.writableEnded) res.write(':\n\n');
    });
    this.rounds = rounds;
    this.onClose = function (this: ServerResponse) {
      rounds.delete(this);
    };
  }

  /** Pings `res` until it closes. */
  add(res: ServerResponse): void {
    this.rounds.add(res);
    res.once('close', this.onClose);
  }

  /** Ends every stream still open and stops the timer. */
  close(): void {
    for (const res of this.rounds.members()) res.end();
    this.rounds.stop();
  }
}
