import {
  type Attributes,
  type Context,
  context,
  INVALID_SPAN_CONTEXT,
  ProxyTracerProvider,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from '@opentelemetry/api';

/**
 * The gateway's spans. Until a tracer provider is registered (`startTracing`, or a test's in-memory one) every
 * call here is OpenTelemetry's no-op: no span objects, nothing injected into signals.
 */
const TRACER_NAME = 'avatar-gateway';
export const tracer = trace.getTracer(TRACER_NAME);

/** The attribute every span of one task carries, so a trace backend can follow a task across its traces. */
export const TASK_ID = 'avatar.task.id';

export { SpanKind };

export interface SpanOptions {
  kind?: SpanKind;
  attributes?: Attributes;
  /** The parent; by default the active span. */
  parent?: Context;
}

/** What `work` is handed while nothing is traced: OpenTelemetry's own no-op span, shared. */
const UNTRACED_SPAN = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);
let providerRegistered = false;

/**
 * Whether a tracer provider is registered (the global provider is a proxy until one is). Until then a span
 * is OpenTelemetry's no-op, but making one still costs a context, a span object and a closure per call:
 * about 1.5% of the server's CPU in a reconnect storm (`npm run bench -- --only reconnect-storm --profile`),
 * where every reconnecting client starts a subscription. A registered provider stays registered.
 */
function tracing(): boolean {
  if (providerRegistered) return true;
  const provider = trace.getTracerProvider();
  providerRegistered =
    !(provider instanceof ProxyTracerProvider) || provider.getDelegateTracer(TRACER_NAME) !== undefined;
  return providerRegistered;
}

/** Runs `work` in a new active span, ended when it settles; a throw is recorded as the span's error. */
export function inSpan<T>(name: string, options: SpanOptions, work: (span: Span) => Promise<T>): Promise<T> {
  if (!tracing()) return work(UNTRACED_SPAN);
  const parent = options.parent ?? context.active();
  return tracer.startActiveSpan(
    name,
    { kind: options.kind ?? SpanKind.INTERNAL, attributes: options.attributes },
    parent,
    async (span) => {
      try {
        return await work(span);
      } catch (error) {
        failSpan(span, error);
        throw error;
      } finally {
        span.end();
      }
    },
  );
}

export function failSpan(span: Span, error: unknown): void {
  if (error instanceof Error) span.recordException(error);
  span.setStatus({
    code: SpanStatusCode.ERROR,
    message: error instanceof Error ? error.message : String(error),
  });
}

/**
 * The active span as a W3C `traceparent`, for what crosses a process boundary without headers (a task signal
 * on Postgres NOTIFY or Redis), or undefined when nothing is traced.
 */
export function currentTraceParent(): string | undefined {
  const carrier: { traceparent?: string } = {};
  propagation.inject(context.active(), carrier);
  return carrier.traceparent;
}

/** The context a `traceparent` from another process names, to parent the spans that follow from it. */
export function contextFromTraceParent(traceparent: string | undefined): Context | undefined {
  if (!traceparent) return undefined;
  return propagation.extract(ROOT_CONTEXT, { traceparent });
}
