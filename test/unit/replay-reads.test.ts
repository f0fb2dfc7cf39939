import { describe, expect, it } from 'vitest';
import type { AvatarTaskRow } from '../../src/db/schema.js';
import { type ReplayPageRequest, ReplayReads } from '../../src/tasks/replay-reads.js';

/** The turns of the event loop after which ReplayReads sends what was asked for. */
const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

const request = (user: number): ReplayPageRequest => ({
  userId: `user-${user}`,
  since: new Date(0),
  afterId: undefined,
});

/**
 * The batching policy alone, over a query whose answers the test releases one by one: which pages wait, and
 * when a query goes out. (test/integration/subscriptions-streams.test.ts runs it on a real database.)
 */
describe('ReplayReads', () => {
  it('sends one query at a time while pages trickle in, and a second beside it only when it is full', async () => {
    const sent: number[] = [];
    const answers: Array<() => void> = [];
    const reads = new ReplayReads(
      async (requests) => {
        sent.push(requests.length);
        await new Promise<void>((resolve) => answers.push(resolve));
        return requests.map((): AvatarTaskRow[] => []);
      },
      { pageSize: 10, maxPagesPerQuery: 3, maxQueriesInFlight: 2 },
    );
    const pages = [reads.read(request(0))];
    await nextTurn();
    expect(sent).toEqual([1]);

    // Two pages wait while the first query is out: not a full query, so they wait for it.
    pages.push(reads.read(request(1)), reads.read(request(2)));
    await nextTurn();
    expect(sent).toEqual([1]);

    // A third makes a full query, which goes out beside the first.
    pages.push(reads.read(request(3)));
    await nextTurn();
    expect(sent).toEqual([1, 3]);

    // Two queries are out, the most allowed: three more wait, full or not.
    pages.push(reads.read(request(4)), reads.read(request(5)), reads.read(request(6)));
    await nextTurn();
    expect(sent).toEqual([1, 3]);

    answers.shift()?.();
    await nextTurn();
    await nextTurn();
    expect(sent).toEqual([1, 3, 3]);

    // The last page waits alone until no query is out.
    pages.push(reads.read(request(7)));
    await nextTurn();
    expect(sent).toEqual([1, 3, 3]);
    answers.shift()?.();
    answers.shift()?.();
    await nextTurn();
    await nextTurn();
    expect(sent).toEqual([1, 3, 3, 1]);
    answers.shift()?.();
    expect(await Promise.all(pages)).toHaveLength(8);
  });

  it('fails every page of a query that fails, and the next query still goes out', async () => {
    let calls = 0;
    const reads = new ReplayReads(
      async (requests) => {
        calls++;
        if (calls === 1) throw new Error('connection lost');
        return requests.map((): AvatarTaskRow[] => []);
      },
      { pageSize: 10 },
    );
    const failed = [reads.read(request(0)), reads.read(request(1))];
    await expect(Promise.all(failed)).rejects.toThrow('connection lost');
    await expect(reads.read(request(2))).resolves.toEqual([]);
    expect(calls).toBe(2);
  });
});
