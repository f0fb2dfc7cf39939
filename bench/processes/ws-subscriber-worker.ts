/**
 * A load-generator child that holds graphql-ws subscribers for the parent: each process has its own open-file
 * limit, so sockets past one process's share live here. Started by bench/lib/subscriber-workers.ts, which
 * sends one `open` and later one `close`. Every update is timed here as it arrives, on the clock all
 * processes share (bench/lib/shared-clock.ts), and reported in small batches: the IPC hop adds no latency to
 * what is measured.
 */
import { toSharedClock } from '../lib/shared-clock.js';
import { openWsSubscribers, type Subscriber, type WsSubscribers } from '../lib/ws-subscribers.js';

export interface OpenRequest {
  type: 'open';
  wsUrl: string;
  subscribers: Subscriber[];
  localAddresses: string[];
  concurrency: number;
  timeoutMs: number;
}

/** [task global id, version, arrival on the shared clock] */
export type ReportedUpdate = [string, number, number];

export type WorkerMessage =
  | { type: 'ready' }
  | { type: 'updates'; updates: ReportedUpdate[] }
  | { type: 'opened'; ready: number; errors: string[] }
  | { type: 'closed' };

/** Updates wait this long for company before they are reported. */
const BATCH_MS = 5;

let subscribers: WsSubscribers | undefined;
let batch: ReportedUpdate[] = [];
let flushScheduled = false;

const send = (message: WorkerMessage, then?: () => void) => process.send?.(message, undefined, {}, then);

function flush(): void {
  flushScheduled = false;
  if (batch.length === 0) return;
  send({ type: 'updates', updates: batch });
  batch = [];
}

process.on('message', async (message: OpenRequest | { type: 'close' }) => {
  if (message.type === 'open') {
    subscribers = await openWsSubscribers({
      wsUrl: message.wsUrl,
      subscribers: message.subscribers,
      localAddresses: message.localAddresses,
      concurrency: message.concurrency,
      timeoutMs: message.timeoutMs,
      onUpdate: (update, at) => {
        batch.push([update.id, update.version, toSharedClock(at)]);
        if (!flushScheduled) {
          flushScheduled = true;
          setTimeout(flush, BATCH_MS);
        }
      },
    });
    flush();
    send({ type: 'opened', ready: subscribers.ready, errors: subscribers.errors.slice(0, 5) });
  } else if (message.type === 'close') {
    await subscribers?.close();
    flush();
    // Exits once the message is handed over: exiting at once could drop it.
    send({ type: 'closed' }, () => process.exit(0));
  }
});
send({ type: 'ready' });
// The parent died: do not keep thousands of sockets open.
process.on('disconnect', () => process.exit(0));
