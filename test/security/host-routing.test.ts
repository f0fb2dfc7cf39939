import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ProductionGateway, rawRequest, startProductionGateway } from './production-gateway.js';

/**
 * seen 9. Limit proved: routing uses the request's path alone. A Host header that smuggles a path
 * (`x/metrics?`) must neither reach /metrics through yoga nor through the lean SSE path's delegation.
 */
describe('routing on the path alone (Host header)', () => {
  let gateway: ProductionGateway;
  beforeAll(async () => {
    gateway = await startProductionGateway();
  });
  afterAll(async () => {
    await gateway?.stop();
  });

  it.each([
    ['yoga', 'application/json'],
    ['the lean SSE path', 'text/event-stream'],
  ])('refuses a Host that carries a path, on %s', async (_path, accept) => {
    const answer = await rawRequest(
      gateway.url,
      `GET /graphql HTTP/1.1\r\nHost: x/metrics?\r\nAccept: ${accept}\r\nConnection: close\r\n\r\n`,
    );
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(answer).not.toContain('# HELP');
  });

  it('refuses a request target that is not a path', async () => {
    const answer = await rawRequest(
      gateway.url,
      `GET http://x/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`,
    );
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(answer).not.toContain('# HELP');
  });

  it('still routes a well-formed Host with a port', async () => {
    const answer = await rawRequest(
      gateway.url,
      `GET /healthz HTTP/1.1\r\nHost: gateway.example.com:4000\r\nConnection: close\r\n\r\n`,
    );
    expect(answer).toMatch(/^HTTP\/1\.1 200 /);
  });
});
