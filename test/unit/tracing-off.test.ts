import { describe, expect, it } from 'vitest';
import { currentTraceParent, inSpan } from '../../src/telemetry/tracing.js';

/** No tracer provider is registered in this file: the gateway as it runs without OTEL_EXPORTER_OTLP_ENDPOINT. */
describe('spans while nothing is traced', () => {
  it('runs the work with a span that records nothing, passing its result and its error through', async () => {
    const result = await inSpan('untraced', {}, async (span) => {
      expect(span.isRecording()).toBe(false);
      span.setAttribute('ignored', 1);
      return 42;
    });
    expect(result).toBe(42);
    await expect(
      inSpan('untraced', {}, async () => {
        throw new Error('the work failed');
      }),
    ).rejects.toThrow('the work failed');
  });

  it('puts no traceparent on what crosses to another process', async () => {
    await inSpan('untraced', {}, async () => {
      expect(currentTraceParent()).toBeUndefined();
    });
  });
});
