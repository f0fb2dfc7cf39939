import { type DocumentNode, type ExecutionResult, getOperationAST, Kind } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { Metrics } from '../metrics.js';
import { failSpan, inSpan } from './tracing.js';

/** How an operation reached the gateway: a label on its metrics and an attribute of its span. */
export type Transport = 'http' | 'sse' | 'graphql-sse' | 'graphql-ws';

export interface OperationDescription {
  transport: Transport;
  document: DocumentNode;
  operationName?: string | null;
}

type OperationMetrics = Pick<Metrics, 'graphqlOperations' | 'graphqlOperationSeconds'>;

/**
 * Every GraphQL operation, whatever carried it, as one span and one count: yoga's HTTP and SSE paths and every
 * transport that runs through the operation gate. Metric labels are bounded by the schema (the operation's
 * type and first root field, never the client's operation name), so a client cannot grow the registry.
 */
export async function observeOperation<T>(
  metrics: OperationMetrics,
  operation: OperationDescription,
  run: () => T | Promise<T>,
): Promise<T> {
  const definition = getOperationAST(operation.document, operation.operationName ?? undefined);
  const type = definition?.operation ?? 'unknown';
  const first = definition?.selectionSet.selections.find((selection) => selection.kind === Kind.FIELD);
  const field = first?.kind === Kind.FIELD ? first.name.value : 'unknown';
  const started = performance.now();
  const labels = { transport: operation.transport, type, field };
  return inSpan(
    `graphql.${type} ${field}`,
    {
      attributes: {
        'graphql.operation.type': type,
        'graphql.operation.name': operation.operationName ?? '',
        'graphql.field': field,
        'gateway.transport': operation.transport,
      },
    },
    async (span) => {
      let outcome = 'error';
      try {
        const result = await run();
        const errors = isExecutionResult(result) ? result.errors : undefined;
        outcome = errors?.length ? 'error' : 'ok';
        if (errors?.length) failSpan(span, errors[0]);
        return result;
      } finally {
        metrics.graphqlOperations.inc({ ...labels, outcome });
        // A subscription's time is how long it took to start; its life is counted as open streams.
        metrics.graphqlOperationSeconds.observe(labels, (performance.now() - started) / 1000);
      }
    },
  );
}

function isExecutionResult(value: unknown): value is ExecutionResult {
  return typeof value === 'object' && value !== null && !(Symbol.asyncIterator in value) && 'data' in value;
}

/** What the gate's transports put into the context; yoga's own requests carry none. */
interface TransportContext {
  transport?: Transport;
  request?: Request;
}

function transportOf(context: TransportContext): Transport {
  if (context.transport) return context.transport;
  return context.request?.headers.get('accept')?.includes('text/event-stream') ? 'sse' : 'http';
}

/** Observes every operation executed or subscribed through yoga's envelope (see `observeOperation`). */
export function useOperationTelemetry(metrics: OperationMetrics): Plugin {
  return {
    onExecute({ executeFn, setExecuteFn }) {
      setExecuteFn((args) =>
        observeOperation(
          metrics,
          {
            transport: transportOf(args.contextValue as TransportContext),
            document: args.document,
            operationName: args.operationName,
          },
          () => executeFn(args),
        ),
      );
    },
    onSubscribe({ subscribeFn, setSubscribeFn }) {
      setSubscribeFn((args) =>
        observeOperation(
          metrics,
          {
            transport: transportOf(args.contextValue as TransportContext),
            document: args.document,
            operationName: args.operationName,
          },
          () => subscribeFn(args),
        ),
      );
    },
  };
}
