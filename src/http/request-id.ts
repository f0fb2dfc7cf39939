import { type ExecutionResult, GraphQLError } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { currentRequestId } from '../telemetry/request-context.js';

/** The error with `extensions.requestId`, so what a client reports can be found in the gateway's logs. */
export function withRequestId(error: GraphQLError, requestId: string): GraphQLError {
  if (error.extensions.requestId === requestId) return error;
  return new GraphQLError(error.message, {
    nodes: error.nodes,
    source: error.source,
    positions: error.positions,
    path: error.path,
    originalError: error.originalError,
    extensions: { ...error.extensions, requestId },
  });
}

function resultWithRequestId(result: ExecutionResult, requestId: string): ExecutionResult {
  if (!result.errors?.length) return result;
  return {
    ...result,
    errors: result.errors.map((error) => withRequestId(error, requestId)),
  };
}

/**
 * Every error yoga answers with in a JSON response carries the request's id (the `X-Request-Id` the response
 * also carries). Event streams are left as they are: a stream's errors are its own events, and the same
 * refusal answers the same way on every stream (NOT_FOUND for a missing and a foreign task alike).
 */
export function useRequestIdInErrors(): Plugin {
  return {
    onResultProcess({ request, result, setResult }) {
      const requestId = currentRequestId();
      if (!requestId || Symbol.asyncIterator in result) return;
      if (request.headers.get('accept')?.includes('text/event-stream')) return;
      setResult(
        Array.isArray(result)
          ? result.map((one) => resultWithRequestId(one, requestId))
          : resultWithRequestId(result as ExecutionResult, requestId),
      );
    },
  };
}
