import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';

export interface TracingConfig {
  /** OTLP/HTTP base URL, e.g. http://otel-collector:4318; spans go to `<it>/v1/traces`. */
  otlpEndpoint: string;
  serviceName: string;
}

/**
 * Registers the process-wide tracer provider that sends spans to an OTLP collector in batches. Only `main`
 * calls it, when OTEL_EXPORTER_OTLP_ENDPOINT is set: an embedder or a test registers a provider of its own.
 * No auto-instrumentation: the gateway's own spans name what matters for a task, and patching http and pg
 * through ESM loader hooks would cost every request for spans nobody asked for.
 */
export function startTracing(config: TracingConfig): { shutdown(): Promise<void> } {
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: config.serviceName }),
    spanProcessors: [
      new BatchSpanProcessor(
        new OTLPTraceExporter({
          url: `${config.otlpEndpoint.replace(/\/$/, '')}/v1/traces`,
          timeoutMillis: 5_000,
        }),
      ),
    ],
  });
  provider.register();
  return { shutdown: () => provider.shutdown() };
}
