import { type DocumentNode, GraphQLError, getOperationAST, type OperationTypeNode } from 'graphql';
import type { Logger } from 'pino';
import { createErrorMasker } from './error-masking.js';
import type { GatewayYoga } from './yoga.js';

/** An operation as every transport receives it. */
export interface OperationParams {
  query: string;
  variables?: Record<string, unknown> | null;
  operationName?: string | null;
  extensions?: Record<string, unknown> | null;
}

type Envelope = ReturnType<GatewayYoga['getEnveloped']>;

export type Admission =
  | { admitted: false; errors: readonly GraphQLError[] }
  | { admitted: true; document: DocumentNode; operation: OperationTypeNode; envelope: Envelope };

/**
 * The one step every transport hands an operation to: yoga's envelope parses it (through the bounded,
 * validated-only document cache), validates it with the same rules and operation limits, and errors are
 * masked with the same masker. yoga's own HTTP and SSE paths run this same envelope themselves; graphql-ws,
 * graphql-sse and the lean SSE transport call `admit`, so no limit or plugin can be missing on one of them.
 * The envelope is returned for the transport to build the context and execute with, and is not kept: the lean
 * paths subscribe on graphql-js so that an open stream holds no envelope (see sse-transport.ts).
 */
export function createOperationGate(yoga: Pick<GatewayYoga, 'getEnveloped'>, logger: Logger) {
  return {
    mask: createErrorMasker(logger),

    /** `initialContext` is what the context factory reads (the viewer, or the request). */
    admit(params: OperationParams, initialContext: Record<string, unknown>): Admission {
      const envelope = yoga.getEnveloped({ ...initialContext, params } as Parameters<
        GatewayYoga['getEnveloped']
      >[0]);
      let document: DocumentNode;
      try {
        document = envelope.parse(params.query);
      } catch (error) {
        if (error instanceof GraphQLError) return { admitted: false, errors: [error] };
        throw error;
      }
      const errors = envelope.validate(envelope.schema, document);
      if (errors.length > 0) return { admitted: false, errors };
      const operation = getOperationAST(document, params.operationName)?.operation;
      if (!operation) {
        return {
          admitted: false,
          errors: [new GraphQLError('Could not determine what operation to execute.')],
        };
      }
      return { admitted: true, document, operation, envelope };
    },
  };
}

export type OperationGate = ReturnType<typeof createOperationGate>;
