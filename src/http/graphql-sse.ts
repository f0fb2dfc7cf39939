import { type ExecutionArgs, type ExecutionResult, GraphQLError, getOperationAST } from 'graphql';
import type { Response as SseResponse } from 'graphql-sse';
import { createHandler } from 'graphql-sse/lib/use/fetch';
import type { Plugin } from 'graphql-yoga';

/**
 * graphql-sse's protocol, executed through yoga's envelop like the other transports. This replaces
 * `@graphql-yoga/plugin-graphql-sse`, whose handler answers 400 "Unable to detect operation AST" to a result
 * with errors but no `data` key (graphql-js's shape when a subscription cannot start, e.g. NOT_FOUND) and
 * 500 when the context refuses the token; here the first arrives as one error event and the second as 401.
 */
export function useGraphQLSSEProtocol(endpoint: string): Plugin {
  const serverContexts = new WeakMap<Request, object>();
  let handler: ((request: Request) => Promise<Response>) | undefined;
  const refuse = (status: number, errors: readonly GraphQLError[]): SseResponse => [
    JSON.stringify({ errors: errors.map((error) => error.toJSON()) }),
    {
      status,
      statusText: status === 401 ? 'Unauthorized' : 'Bad Request',
      headers: { 'content-type': 'application/json; charset=utf-8' },
    },
  ];
  return {
    onYogaInit({ yoga }) {
      handler = createHandler(
        {
          onSubscribe: async (request, params) => {
            const enveloped = yoga.getEnveloped({
              ...serverContexts.get(request.raw),
              request: request.raw,
              params,
            });
            let document: ReturnType<typeof enveloped.parse>;
            try {
              document = enveloped.parse(params.query);
            } catch (error) {
              if (error instanceof GraphQLError) return refuse(400, [error]);
              throw error;
            }
            const errors = enveloped.validate(enveloped.schema, document);
            if (errors.length > 0) return refuse(400, errors);
            const operation = getOperationAST(document, params.operationName);
            if (!operation) return refuse(400, [new GraphQLError('Unable to identify the operation')]);
            let contextValue: unknown;
            try {
              contextValue = await enveloped.contextFactory();
            } catch (error) {
              if (!(error instanceof GraphQLError)) throw error;
              const status = (error.extensions.http as { status?: number } | undefined)?.status ?? 400;
              return refuse(status, [error]);
            }
            const args: ExecutionArgs = {
              schema: enveloped.schema,
              document,
              contextValue,
              variableValues: params.variables,
              operationName: params.operationName,
            };
            const result: AsyncIterable<ExecutionResult> | ExecutionResult = await (operation.operation ===
            'subscription'
              ? enveloped.subscribe(args)
              : enveloped.execute(args));
            if (Symbol.asyncIterator in result) return result;
            // graphql-sse recognises a result only by its `data` key.
            return { ...result, data: result.data ?? null };
          },
        },
        yoga.fetchAPI,
      );
    },
    onRequest({ request, endResponse, serverContext }) {
      if (!handler || new URL(request.url).pathname !== endpoint) return;
      serverContexts.set(request, serverContext);
      return handler(request).then(endResponse);
    },
  };
}
