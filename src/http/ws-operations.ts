import { type ExecutionArgs, type ExecutionResult, GraphQLError } from 'graphql';
import { CloseCode, type Context, MessageType, parseMessage, type SubscribeMessage } from 'graphql-ws';

/** The socket an operation answers on (ws-transport.ts's channel: its caps apply to every message). */
export interface OperationChannel {
  send(data: string): Promise<void>;
  close(code: number, reason: string): void;
  /** A send that failed: the socket is closed as graphql-ws closes it when its handler throws (1011). */
  failed(error: unknown): void;
}

/** The parts of the gateway an operation runs through (see websocket.ts). */
export interface OperationHooks<E> {
  /** graphql-ws's onSubscribe: the arguments to run it with, or the errors to answer it with. */
  prepare(
    ctx: Context<Record<string, unknown>, E>,
    id: string,
    payload: SubscribeMessage['payload'],
  ): Promise<ExecutionArgs | readonly GraphQLError[]>;
  /** A subscription's stream of results, or a query's or mutation's one result. */
  run(args: ExecutionArgs): Promise<AsyncIterableIterator<ExecutionResult> | ExecutionResult>;
  mask(error: GraphQLError): GraphQLError;
}

type Subscriptions = Context['subscriptions'];

/**
 * graphql-ws's `subscribe` message, handled as its server handles it (the same checks, close codes and
 * messages, and its `ctx.subscriptions` bookkeeping, so its `complete` message and its socket close still end
 * the operation), except how a subscription's results are carried. graphql-ws's server runs
 * `for await (const result of stream)` inside its message handler: an async function, with the message, the
 * execution arguments and three emitter closures, stays suspended for as long as the subscription is idle,
 * about 1.2 KB of every one of them (`npm run bench -- --only idle-subscribers`). Here a subscription is one
 * small object that asks its stream for the next result once the last one is sent.
 *
 * Only for sockets graphql-ws has acknowledged: before that, graphql-ws itself answers `subscribe` (4401).
 */
export async function runOperation<E>(
  ctx: Context<Record<string, unknown>, E>,
  channel: OperationChannel,
  received: object,
  hooks: OperationHooks<E>,
): Promise<void> {
  let message: SubscribeMessage;
  try {
    message = parseMessage(received) as SubscribeMessage;
  } catch {
    return channel.close(CloseCode.BadRequest, 'Invalid message received');
  }
  const { id } = message;
  if (id in ctx.subscriptions) {
    return channel.close(CloseCode.SubscriberAlreadyExists, `Subscriber for ${id} already exists`);
  }
  // Reserved while the operation is prepared: a `complete` meanwhile removes it, and nothing is sent.
  const subscriptions = ctx.subscriptions as Record<string, unknown>;
  subscriptions[id] = null;
  const reserved = () => id in ctx.subscriptions;
  let streaming = false;
  try {
    const prepared = await hooks.prepare(ctx, id, message.payload);
    if (Array.isArray(prepared)) {
      if (reserved()) await channel.send(errorMessage(id, prepared.map(hooks.mask)));
      return;
    }
    const result = await hooks.run(prepared as ExecutionArgs);
    if (!(Symbol.asyncIterator in result)) {
      if (reserved()) await channel.send(nextMessage(id, result, hooks.mask));
      if (reserved()) await channel.send(completeMessage(id));
      return;
    }
    if (!reserved()) {
      void result.return?.();
      return;
    }
    const stream = new OperationStream(ctx.subscriptions, id, result, channel, hooks.mask);
    subscriptions[id] = stream;
    streaming = true;
    stream.pull();
  } finally {
    // As graphql-ws does. If the socket closed meanwhile, graphql-ws has replaced ctx.subscriptions and this
    // removes the id from the old one, which nothing reads any more.
    if (!streaming) delete subscriptions[id];
  }
}

/**
 * One running subscription. graphql-ws's `complete` message and its socket close call `return()` (it is an
 * "async generator" to them: an async iterable with `return`), which ends the stream; a result that arrives
 * after that is not sent, nor is `complete`, as graphql-ws does.
 */
class OperationStream implements AsyncIterable<ExecutionResult> {
  constructor(
    private readonly subscriptions: Subscriptions,
    private readonly id: string,
    private readonly stream: AsyncIterableIterator<ExecutionResult>,
    private readonly channel: OperationChannel,
    private readonly mask: (error: GraphQLError) => GraphQLError,
  ) {}

  [Symbol.asyncIterator](): AsyncIterator<ExecutionResult> {
    return this.stream;
  }

  return(): Promise<IteratorResult<ExecutionResult>> {
    return this.stream.return?.() ?? Promise.resolve({ done: true, value: undefined });
  }

  /** The next result, sent before the one after it is asked for (a slow reader slows its stream). */
  pull(): void {
    this.stream.next().then(
      (step) => this.forward(step),
      (error: unknown) => this.fail(error),
    );
  }

  private get running(): boolean {
    return this.subscriptions[this.id] === this;
  }

  private forward(step: IteratorResult<ExecutionResult>): void {
    if (!this.running) return;
    if (step.done) {
      this.end();
      this.sent(this.channel.send(completeMessage(this.id)));
      return;
    }
    this.channel.send(nextMessage(this.id, step.value, this.mask)).then(
      () => this.pull(),
      (error: unknown) => this.channel.failed(error),
    );
  }

  /** The stream threw: one `error` message (graphql-ws's wording and masking), and no `complete`. */
  private fail(error: unknown): void {
    if (!this.running) return;
    this.end();
    const original = error instanceof Error ? error : new Error(String(error));
    const wrapped = new GraphQLError(original.message, { originalError: original });
    this.sent(this.channel.send(errorMessage(this.id, [this.mask(wrapped)])));
  }

  private end(): void {
    delete (this.subscriptions as Record<string, unknown>)[this.id];
  }

  private sent(sending: Promise<void>): void {
    sending.catch((error: unknown) => this.channel.failed(error));
  }
}

function nextMessage(id: string, result: ExecutionResult, mask: (error: GraphQLError) => GraphQLError) {
  const payload = result.errors ? { ...result, errors: result.errors.map(mask) } : result;
  return JSON.stringify({ id, type: MessageType.Next, payload });
}

function errorMessage(id: string, errors: readonly GraphQLError[]) {
  return JSON.stringify({ id, type: MessageType.Error, payload: errors });
}

function completeMessage(id: string) {
  return JSON.stringify({ id, type: MessageType.Complete });
}
