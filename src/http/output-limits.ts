import { type ExecutionResult, GraphQLError } from 'graphql';

/** `extensions.code` of the error that ends a stream past an output cap. */
export const OUTPUT_LIMIT_EXCEEDED = 'OUTPUT_LIMIT_EXCEEDED';

export const updateTooLarge = () =>
  new GraphQLError('Update over MAX_UPDATE_BYTES', { extensions: { code: OUTPUT_LIMIT_EXCEEDED } });

/**
 * Whether `text` takes more than `maxBytes` in UTF-8, without encoding it when its length settles it: a
 * UTF-16 code unit takes one to three bytes.
 */
export function exceedsBytes(text: string, maxBytes: number): boolean {
  if (text.length > maxBytes) return true;
  if (text.length * 3 <= maxBytes) return false;
  return Buffer.byteLength(text, 'utf8') > maxBytes;
}

/**
 * A subscription's results, ended with one OUTPUT_LIMIT_EXCEEDED error at the first that serialises over
 * `maxBytes`. For graphql-sse, whose handler serialises results itself: this measures each one once more,
 * where the lean transports check the text they send.
 */
export function capUpdates(
  source: AsyncIterable<ExecutionResult>,
  maxBytes: number,
): AsyncIterableIterator<ExecutionResult> {
  const iterator = source[Symbol.asyncIterator]();
  let ended = false;
  return {
    [Symbol.asyncIterator]() {
      return this;
    },
    async next() {
      if (ended) return { done: true, value: undefined };
      const next = await iterator.next();
      if (next.done || !exceedsBytes(JSON.stringify(next.value), maxBytes)) return next;
      ended = true;
      await iterator.return?.();
      return { done: false, value: { errors: [updateTooLarge()] } };
    },
    async return() {
      ended = true;
      await iterator.return?.();
      return { done: true, value: undefined };
    },
    // graphql-sse ends a stream whose client left only if it looks like an async generator, `throw` included.
    async throw(error: unknown) {
      ended = true;
      await iterator.return?.();
      throw error;
    },
  };
}
