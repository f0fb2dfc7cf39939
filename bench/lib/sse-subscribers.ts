import { mapLimit } from './load.js';
import type { Subscriber, TaskUpdate } from './ws-subscribers.js';
import { WATCH_TASK } from './ws-subscribers.js';

/**
 * SSE subscribers as a browser app without a GraphQL client would be: a fetch POSTing the subscription with
 * `Accept: text/event-stream` and reading the stream, one connection per subscriber.
 */

export interface SseSubscribers {
  ready: number;
  errors: string[];
  close(): void;
}

export async function openSseSubscribers(options: {
  url: string;
  subscribers: readonly Subscriber[];
  onUpdate(update: TaskUpdate, at: number): void;
  concurrency?: number;
  timeoutMs?: number;
}): Promise<SseSubscribers> {
  const controllers: AbortController[] = [];
  const errors: string[] = [];
  const state: SseSubscribers = {
    ready: 0,
    errors,
    close: () => {
      for (const controller of controllers) controller.abort();
    },
  };
  const timeoutMs = options.timeoutMs ?? 30_000;
  await mapLimit(options.subscribers, options.concurrency ?? 100, async (subscriber) => {
    const controller = new AbortController();
    controllers.push(controller);
    await new Promise<void>((resolve) => {
      let first = true;
      const timer = setTimeout(() => settle(`no snapshot within ${timeoutMs} ms`), timeoutMs);
      function settle(error?: string) {
        if (error) errors.push(error);
        if (!first) return;
        first = false;
        clearTimeout(timer);
        resolve();
      }
      const onEvent = (data: string) => {
        const at = performance.now();
        const value = JSON.parse(data) as { data?: { avatarTaskUpdated?: TaskUpdate }; errors?: unknown[] };
        const update = value.data?.avatarTaskUpdated;
        if (update) {
          if (first) state.ready++;
          options.onUpdate(update, at);
          settle();
        } else settle(JSON.stringify(value.errors?.[0] ?? value));
      };
      void read(options.url, subscriber, controller.signal, onEvent).catch((error: unknown) => {
        if (!controller.signal.aborted) settle((error as Error).message);
      });
    });
  });
  return state;
}

async function read(
  url: string,
  subscriber: Subscriber,
  signal: AbortSignal,
  onEvent: (data: string) => void,
) {
  const response = await fetch(url, {
    method: 'POST',
    headers: {
      accept: 'text/event-stream',
      'content-type': 'application/json',
      authorization: `Bearer ${subscriber.token}`,
    },
    body: JSON.stringify({ query: WATCH_TASK, variables: { id: subscriber.taskId } }),
    signal,
  });
  if (!response.ok || !response.body) throw new Error(`SSE answered ${response.status}`);
  await readNextEvents(response.body, onEvent);
}

/**
 * Reads a `text/event-stream` body until it ends, handing over the data of each `next` event (or event
 * without a name). Comments (`:` pings) and `complete` events carry no task.
 */
export async function readNextEvents(
  body: ReadableStream<Uint8Array>,
  onEvent: (data: string) => void,
): Promise<void> {
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let end = buffer.indexOf('\n\n');
    while (end >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      end = buffer.indexOf('\n\n');
      const data = block
        .split('\n')
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).trimStart())
        .join('\n');
      const event = /^event:\s*(.*)$/m.exec(block)?.[1]?.trim();
      if (data && (event === undefined || event === 'next')) onEvent(data);
    }
  }
}
