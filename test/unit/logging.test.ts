import { GraphQLError } from 'graphql';
import { describe, expect, it } from 'vitest';
import { scrubString, serializeError } from '../../src/logging.js';

/** drizzle's wrapper of a failed query, as drizzle-orm builds it. */
class FailedQuery extends Error {
  constructor(
    readonly query: string,
    readonly params: unknown[],
    override readonly cause: Error,
  ) {
    super(`Failed query: ${query}\nparams: ${params}`);
  }
}

describe('serializeError', () => {
  const database = Object.assign(new Error('value "alice-secret-key" violates check constraint'), {
    code: '23514',
    detail: 'Failing row contains (alice-secret-key, user-alice)',
    constraint_name: 'poison',
  });
  const failed = new FailedQuery(
    'insert into t values ($1, $2)',
    ['alice-secret-key', 'user-alice'],
    database,
  );

  it('keeps the SQL and the database codes, drops every parameter and the failing row', () => {
    const text = JSON.stringify(serializeError(new GraphQLError(failed.message, { originalError: failed })));
    expect(text).toContain('insert into t values ($1, $2)');
    expect(text).toContain('23514');
    expect(text).toContain('poison');
    expect(text).not.toContain('alice-secret-key');
    expect(text).not.toContain('user-alice');
    expect(text).not.toContain('Failing row');
  });

  it('scrubs bearer tokens, JWTs and callback secrets from any text', () => {
    const jwt = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz';
    const text = scrubString(
      `Authorization: Bearer abc.def; token ${jwt}; http://gw/callbacks/kie/123e4567/s3cr3t-v4lue?x=1`,
    );
    expect(text).not.toContain('abc.def');
    expect(text).not.toContain(jwt);
    expect(text).not.toContain('s3cr3t-v4lue');
    expect(text).toContain('/callbacks/kie/123e4567/[redacted]');
  });
});
