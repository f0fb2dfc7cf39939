import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/** One registry per gateway instance, so two instances in one test process don't share counters. */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    upstreamCalls: new Counter({
      name: 'avatar_gateway_upstream_calls_total',
      help: 'Calls to kie, by operation and kie code (0: no answer)',
      labelNames: ['operation', 'code'] as const,
      registers: [registry],
    }),
    upstreamDuration: new Histogram({
      name: 'avatar_gateway_upstream_call_seconds',
      help: 'Duration of calls to kie',
      labelNames: ['operation'] as const,
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    callbacks: new Counter({
      name: 'avatar_gateway_callbacks_total',
      help: 'Callbacks received, by HTTP status answered',
      labelNames: ['status'] as const,
      registers: [registry],
    }),
    transitions: new Counter({
      name: 'avatar_gateway_task_transitions_total',
      help: 'Task state changes, by new state and source',
      labelNames: ['state', 'source'] as const,
      registers: [registry],
    }),
    graphqlOperations: new Counter({
      name: 'avatar_gateway_graphql_operations_total',
      help: 'GraphQL operations, by transport, operation type, first root field and outcome (ok: no errors)',
      labelNames: ['transport', 'type', 'field', 'outcome'] as const,
      registers: [registry],
    }),
    graphqlOperationSeconds: new Histogram({
      name: 'avatar_gateway_graphql_operation_seconds',
      help: 'Time to answer a query or mutation, or to start a subscription',
      labelNames: ['transport', 'type', 'field'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    resultCopies: new Counter({
      name: 'avatar_gateway_result_copies_total',
      help: 'Result videos copied into storage, by outcome (stored, retry, failed, removed after retention)',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    resultLinkRefreshes: new Counter({
      name: 'avatar_gateway_result_link_refreshes_total',
      help: 'kie result links refreshed through download-url while no copy exists, by outcome (ok, failed)',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    kieCreditBalance: new Gauge({
      name: 'avatar_gateway_kie_credit_balance',
      help: "kie's account credit balance, as last read (every KIE_CREDITS_CACHE_MS)",
      registers: [registry],
    }),
    createsPaused: new Gauge({
      name: 'avatar_gateway_kie_creates_paused',
      help: '1 while this instance sends no creates because kie answered 402 (out of credits), else 0',
      registers: [registry],
    }),
    activeSubscriptions: new Gauge({
      name: 'avatar_gateway_active_subscriptions',
      help: 'avatarTaskUpdated streams open on this instance, over graphql-ws and SSE alike',
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
