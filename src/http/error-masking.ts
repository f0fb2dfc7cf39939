import { type ExecutionResult, GraphQLError } from 'graphql';
import { maskError } from 'graphql-yoga';
import type { Logger } from 'pino';
import { isDatabaseUnavailable } from '../db/unavailable.js';

/** yoga's own wording for a masked error. */
export const UNEXPECTED_ERROR = 'Unexpected error.';
export const SERVICE_UNAVAILABLE = 'SERVICE_UNAVAILABLE';

/**
 * yoga's masking plus one case clients can act on: the database is unreachable or did not answer in time.
 * That is SERVICE_UNAVAILABLE with HTTP 503 (retry later), not a 200 "Unexpected error.". Used by yoga for
 * HTTP and by the transports that run subscriptions on graphql-js directly, so all of them answer alike.
 */
export function createGatewayMaskError(logger: Logger) {
  return (error: unknown, message: string = UNEXPECTED_ERROR): Error => {
    const original = error instanceof GraphQLError ? (error.originalError ?? error) : error;
    if (isDatabaseUnavailable(original)) {
      logger.warn({ err: original }, 'database unavailable; answered SERVICE_UNAVAILABLE');
      return new GraphQLError('The service is temporarily unavailable; retry shortly.', {
        ...(error instanceof GraphQLError ? { nodes: error.nodes, path: error.path } : {}),
        extensions: { code: SERVICE_UNAVAILABLE, http: { status: 503 } },
      });
    }
    return maskError(error, message);
  };
}

/**
 * Masks errors as yoga does over HTTP, for the transports whose subscriptions run on graphql-js directly (and so
 * outside yoga's masking plugin): anything not meant for clients becomes "Unexpected error." and is logged.
 */
export function createErrorMasker(logger: Logger) {
  const mask = createGatewayMaskError(logger);
  return (error: GraphQLError): GraphQLError => {
    const masked = mask(error) as GraphQLError;
    if (masked !== error && masked.extensions.code !== SERVICE_UNAVAILABLE) {
      logger.error({ err: error.originalError ?? error }, 'subscription failed');
    }
    return masked;
  };
}

/**
 * The error of a subscription that failed before it started because the database is unavailable, if that is
 * why: the transports answer it as such (503, or graphql-ws's `error` message) instead of as one result.
 */
export function unavailableError(result: ExecutionResult): GraphQLError | undefined {
  return result.errors?.find((error) => isDatabaseUnavailable(error.originalError));
}
