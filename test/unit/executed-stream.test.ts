import { GraphQLInt, GraphQLObjectType, GraphQLSchema, GraphQLString, parse } from 'graphql';
import { describe, expect, it } from 'vitest';
import { subscribe } from '../../src/http/executed-stream.js';

/** A source that yields the given events, then waits until returned, counting returns. */
function source(events: unknown[]) {
  const state = { returned: 0 };
  let release: (() => void) | undefined;
  const iterator: AsyncIterableIterator<unknown> = {
    async next() {
      if (events.length > 0) return { value: events.shift(), done: false };
      if (state.returned) return { value: undefined, done: true };
      await new Promise<void>((resolve) => {
        release = resolve;
      });
      return { value: undefined, done: true };
    },
    async return() {
      state.returned++;
      release?.();
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]: () => iterator,
  };
  return { iterator, state };
}

function schemaOver(stream: AsyncIterableIterator<unknown>) {
  const Update = new GraphQLObjectType({
    name: 'Update',
    fields: {
      version: { type: GraphQLInt },
      label: {
        type: GraphQLString,
        resolve: (update: { version: number }) => {
          if (update.version < 0) throw new Error('bad version');
          return `v${update.version}`;
        },
      },
    },
  });
  return new GraphQLSchema({
    query: new GraphQLObjectType({ name: 'Query', fields: { ok: { type: GraphQLInt } } }),
    subscription: new GraphQLObjectType({
      name: 'Subscription',
      fields: { updated: { type: Update, subscribe: () => stream, resolve: (event: unknown) => event } },
    }),
  });
}

const document = parse('subscription { updated { version label } }');

describe('executed stream', () => {
  it('executes every source event with the event as root value', async () => {
    const { iterator } = source([{ version: 3 }, { version: 4 }]);
    const stream = await subscribe({ schema: schemaOver(iterator), document });
    if (!(Symbol.asyncIterator in stream)) throw new Error('expected a stream');
    expect((await stream.next()).value).toEqual({ data: { updated: { version: 3, label: 'v3' } } });
    expect((await stream.next()).value).toEqual({ data: { updated: { version: 4, label: 'v4' } } });
  });

  it('reports a failing field as an error of that result, and goes on', async () => {
    const { iterator } = source([{ version: -1 }, { version: 5 }]);
    const stream = await subscribe({ schema: schemaOver(iterator), document });
    if (!(Symbol.asyncIterator in stream)) throw new Error('expected a stream');
    const failed = (await stream.next()).value;
    expect(failed?.data).toEqual({ updated: { version: -1, label: null } });
    expect(failed?.errors?.[0]?.message).toBe('bad version');
    expect((await stream.next()).value?.data).toEqual({ updated: { version: 5, label: 'v5' } });
  });

  it('lets go of a result once the consumer asks for the next one, while it waits', async () => {
    const { iterator } = source([{ version: 3 }]);
    const stream = await subscribe({ schema: schemaOver(iterator), document });
    if (!(Symbol.asyncIterator in stream)) throw new Error('expected a stream');
    const sent = (await stream.next()).value;
    expect(sent?.data).toEqual({ updated: { version: 3, label: 'v3' } });
    const waiting = stream.next();
    expect(sent?.data).toBeUndefined();
    await stream.return?.();
    await expect(waiting).resolves.toEqual({ value: undefined, done: true });
  });

  it('closes the source when the consumer stops, ending a pending wait', async () => {
    const { iterator, state } = source([]);
    const stream = await subscribe({ schema: schemaOver(iterator), document });
    if (!(Symbol.asyncIterator in stream)) throw new Error('expected a stream');
    const pending = stream.next();
    await expect(stream.return?.()).resolves.toEqual({ value: undefined, done: true });
    expect(state.returned).toBe(1);
    await expect(pending).resolves.toEqual({ value: undefined, done: true });
  });

  it('answers an invalid subscription with errors, not a stream', async () => {
    const { iterator } = source([]);
    const result = await subscribe({
      schema: schemaOver(iterator),
      document: parse('subscription { updated { version } }'),
      variableValues: {},
      operationName: 'Missing',
    });
    expect(Symbol.asyncIterator in result).toBe(false);
    expect((result as { errors?: unknown[] }).errors?.length).toBe(1);
  });
});
