import type { GraphQLError } from 'graphql';
import { maskError } from 'graphql-yoga';
import type { Logger } from 'pino';

/** yoga's own wording for a masked error. */
export const UNEXPECTED_ERROR = 'Unexpected error.';

/**
 * Masks errors as yoga does over HTTP, for the transports whose subscriptions run on graphql-js directly (and so
 * outside yoga's masking plugin): anything not meant for clients becomes "Unexpected error." and is logged.
 */
export function createErrorMasker(logger: Logger) {
  return (error: GraphQLError): GraphQLError => {
    const masked = maskError(error, UNEXPECTED_ERROR) as GraphQLError;
    if (masked !== error) logger.error({ err: error.originalError ?? error }, 'subscription failed');
    return masked;
  };
}
