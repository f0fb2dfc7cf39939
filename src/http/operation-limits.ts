import { maxAliasesPlugin } from '@escape.tech/graphql-armor-max-aliases';
import { maxDepthPlugin } from '@escape.tech/graphql-armor-max-depth';
import { maxDirectivesPlugin } from '@escape.tech/graphql-armor-max-directives';
import { GraphQLError, parse } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { QueryLimits } from '../config.js';
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from '../graphql/types/avatar-task.js';
import { queryCostRule } from './query-cost.js';

/** `extensions.code` of every refusal below; `extensions.limit` names the variable that sets the limit. */
export const QUERY_LIMIT_EXCEEDED = 'QUERY_LIMIT_EXCEEDED';

/** What graphql-armor's rules call with a refusal. */
type ArmorCallbacks = Pick<
  NonNullable<Parameters<typeof maxAliasesPlugin>[0]>,
  'onReject' | 'propagateOnRejection'
>;

/** A task's history is a handful of states; the cost limit assumes this many events. */
const ASSUMED_LIST_SIZE = 10;

/**
 * A refusal is 400 over HTTP for every client. With `spec` true, which the GraphQL over HTTP spec allows for
 * an ordinary invalid document, yoga answers an `application/json` client 200; and yoga sets `spec ||= true`
 * on every parse error, so here it cannot be set.
 */
class RefusalStatus {
  readonly status = 400;
  get spec(): boolean {
    return false;
  }
  set spec(_ignored: boolean) {}
}

const refusal = (limit: string) => (message: string) =>
  new GraphQLError(message, {
    extensions: { code: QUERY_LIMIT_EXCEEDED, limit, http: new RefusalStatus() },
  });

/**
 * The limits every operation meets before it is executed or cached, as envelop plugins, so that every
 * transport's parse and validate (all of them go through yoga's envelope, see operation-gate.ts) applies them.
 * The token limit stops the lexer itself: a million `@include` is refused after MAX_QUERY_TOKENS tokens
 * rather than parsed and then counted. The others are validation rules that each walk the document once.
 */
export function useOperationLimits(limits: QueryLimits): Plugin[] {
  const tooManyTokens = refusal('MAX_QUERY_TOKENS');
  // graphql-armor's rules throw from inside graphql-js's validate by default; reported instead, a refusal is
  // one ordinary validation error among any others.
  const reported = (limit: string): ArmorCallbacks => ({
    propagateOnRejection: false,
    onReject: [
      (context, error) => context?.reportError(refusal(limit)(error.message.replace(/^Syntax Error: /, ''))),
    ],
  });
  return [
    {
      onParse({ setParseFn }) {
        setParseFn((source, options) => {
          try {
            return parse(source, { ...options, maxTokens: limits.maxTokens });
          } catch (error) {
            if (error instanceof GraphQLError && /contains more th\w+ \d+ tokens/.test(error.message)) {
              throw tooManyTokens(`Token limit of ${limits.maxTokens} exceeded.`);
            }
            throw error;
          }
        });
      },
    },
    maxAliasesPlugin({ n: limits.maxAliases, ...reported('MAX_QUERY_ALIASES') }),
    maxDepthPlugin({ n: limits.maxDepth, ...reported('MAX_QUERY_DEPTH') }),
    maxDirectivesPlugin({ n: limits.maxDirectives, ...reported('MAX_QUERY_DIRECTIVES') }),
    {
      onValidate({ addValidationRule }) {
        addValidationRule(
          queryCostRule({
            maxCost: limits.maxCost,
            maxPageSize: MAX_PAGE_SIZE,
            defaultPageSize: DEFAULT_PAGE_SIZE,
            assumedListSize: ASSUMED_LIST_SIZE,
            refuse: refusal('MAX_QUERY_COST'),
          }),
        );
      },
    },
  ];
}
