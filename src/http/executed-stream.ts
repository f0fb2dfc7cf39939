import {
  createSourceEventStream,
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
  execute,
  type GraphQLSchema,
  subscribe as graphqlSubscribe,
} from 'graphql';
import { type CompiledQuery, compileQuery, isCompiledQuery } from 'graphql-jit';

/**
 * Each update of a subscription is its operation executed with the event as root value: graphql-js builds an
 * execution context, collects fields into fresh maps and records a path per field, every time. Compiled once
 * by graphql-jit (on the first update any stream of that document delivers, so idle streams compile nothing),
 * an update is one generated function and its plain objects.
 *
 * Measured with 10,000 subscribers at 200 updates/s (`npm run bench -- --only fan-out`): the gateway's CPU
 * went from 40-50% of its core to 27-43%, and its old generation grows more slowly, so major collections,
 * which set fan-out's tail when one falls inside a measured segment, come less often (they still do: see
 * "fan-out's promotions" in bench/README.md). null: graphql-jit could not compile it, and graphql-js runs it.
 */
const compiledUpdates = new WeakMap<
  GraphQLSchema,
  WeakMap<DocumentNode, Map<string, CompiledQuery | null>>
>();

function compiledUpdate(args: ExecutionArgs): CompiledQuery | null {
  let bySchema = compiledUpdates.get(args.schema);
  if (!bySchema) {
    bySchema = new WeakMap();
    compiledUpdates.set(args.schema, bySchema);
  }
  let byOperation = bySchema.get(args.document);
  if (!byOperation) {
    byOperation = new Map();
    bySchema.set(args.document, byOperation);
  }
  const name = args.operationName ?? '';
  let compiled = byOperation.get(name);
  if (compiled === undefined) {
    const outcome = compileQuery(args.schema, args.document, args.operationName ?? undefined);
    compiled = isCompiledQuery(outcome) ? outcome : null;
    byOperation.set(name, compiled);
  }
  return compiled;
}

/**
 * graphql-js's `subscribe`, with the stream of results as one small object. graphql-js maps the source
 * stream with `mapAsyncIterator`: five closures and an async `next` that stays suspended (a generator and its
 * registers) for as long as the subscription waits, about 0.6 KB of every idle subscription
 * (`npm run bench -- --only idle-subscribers --profile`). This does the same (each source event executed
 * with the event as root value, the source closed when the consumer stops or a mapping fails) with methods
 * shared by every stream. Arguments it would not handle the same way (a custom subscribe resolver) go to
 * graphql-js's own.
 */
export async function subscribe(
  args: ExecutionArgs,
): Promise<AsyncIterableIterator<ExecutionResult> | ExecutionResult> {
  if (args.subscribeFieldResolver !== undefined || args.fieldResolver !== undefined) {
    return graphqlSubscribe(args);
  }
  const source = await createSourceEventStream(args);
  if (!(Symbol.asyncIterator in source)) return source;
  return new ExecutedStream(source[Symbol.asyncIterator](), args);
}

class ExecutedStream implements AsyncIterableIterator<ExecutionResult> {
  /** The result handed out last, until the consumer asks for the next one. */
  private handedOut: ExecutionResult | undefined;

  constructor(
    private readonly source: AsyncIterator<unknown>,
    private readonly args: ExecutionArgs,
  ) {}

  /**
   * Not an async function: one would stay suspended on the source for as long as the stream is idle.
   * Asking for the next result says the consumer is done with the last one (graphql-ws sends each result
   * before it asks again, then keeps it in its loop's variable while the stream waits): its data is let go
   * here, so an idle subscription does not hold a copy of its last update.
   */
  next(): Promise<IteratorResult<ExecutionResult>> {
    const sent = this.handedOut;
    if (sent) {
      this.handedOut = undefined;
      sent.data = undefined;
    }
    return this.source.next().then((step) => this.map(step));
  }

  async return(): Promise<IteratorResult<ExecutionResult>> {
    if (typeof this.source.return !== 'function') return { value: undefined, done: true };
    return this.map(await this.source.return());
  }

  async throw(error?: unknown): Promise<IteratorResult<ExecutionResult>> {
    if (typeof this.source.throw === 'function') return this.map(await this.source.throw(error));
    await this.closeSource();
    throw error;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  private async map(step: IteratorResult<unknown>): Promise<IteratorResult<ExecutionResult>> {
    if (step.done) return step;
    try {
      const result = await this.execute(step.value);
      this.handedOut = result;
      return { value: result, done: false };
    } catch (error) {
      await this.closeSource();
      throw error;
    }
  }

  private execute(event: unknown): ExecutionResult | Promise<ExecutionResult> {
    const { args } = this;
    const compiled = compiledUpdate(args);
    if (!compiled) return execute({ ...args, rootValue: event });
    return compiled.query(event, args.contextValue, args.variableValues ?? {}) as
      | ExecutionResult
      | Promise<ExecutionResult>;
  }

  private async closeSource(): Promise<void> {
    try {
      await this.source.return?.();
    } catch {
      // The mapping's own error is the one to report.
    }
  }
}
