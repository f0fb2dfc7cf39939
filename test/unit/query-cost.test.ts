import { GraphQLError, parse, validate } from 'graphql';
import { describe, expect, it } from 'vitest';
import { schema } from '../../src/graphql/schema.js';
import { queryCostRule } from '../../src/http/query-cost.js';

/** The cost the rule finds, read back from the refusal of a limit of 0. */
function costOf(query: string): number {
  const rule = queryCostRule({
    maxCost: 0,
    maxPageSize: 100,
    defaultPageSize: 20,
    assumedListSize: 10,
    refuse: (message) => new GraphQLError(message),
  });
  const errors = validate(schema, parse(query), [rule]);
  const found = /found (\d+)/.exec(errors[0]?.message ?? '')?.[1];
  if (found === undefined) throw new Error(`no cost reported: ${JSON.stringify(errors)}`);
  return Number(found);
}

describe('queryCostRule (MAX_QUERY_COST)', () => {
  it('multiplies the fields under a page by its first:, and counts a long string for its length', () => {
    // avatarTasks 1 + edges 1 + 100 × (node 1 + id 1 + prompt 50)
    expect(costOf('{ avatarTasks(first: 100) { edges { node { id prompt } } } }')).toBe(5_202);
    expect(costOf('{ avatarTasks(first: 10) { edges { node { id prompt } } } }')).toBe(522);
  });

  it('counts a variable first: as the largest page, a missing one as the default page', () => {
    const page = 'edges { node { id } }';
    expect(costOf(`query ($n: Int) { avatarTasks(first: $n) { ${page} } }`)).toBe(202);
    expect(costOf(`{ avatarTasks { ${page} } }`)).toBe(42);
    // A first: over the largest page is capped, as the resolver caps it.
    expect(costOf(`{ avatarTasks(first: 100000) { ${page} } }`)).toBe(202);
  });

  it('adds up aliases, and fragments as many times as they are spread', () => {
    const one = costOf('{ avatarTask(id: "x") { prompt } }');
    expect(one).toBe(51);
    expect(costOf('{ a: avatarTask(id: "x") { prompt } b: avatarTask(id: "x") { prompt } }')).toBe(2 * one);
    expect(
      costOf(
        'fragment P on AvatarTask { prompt } { a: avatarTask(id: "x") { ...P } b: avatarTask(id: "x") { ...P } }',
      ),
    ).toBe(2 * one);
  });

  it('assumes ten of a list that is not paged (a task events)', () => {
    // avatarTask 1 + events 1 + 10 × (state 1 + message 5)
    expect(costOf('{ avatarTask(id: "x") { events { state message } } }')).toBe(62);
  });
});
