import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { useTestDatabase } from '../helpers/database.js';
import { createTask, sampleInput, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';

/**
 * The TCP proxy in front of kie (issue 9, seen 4): a create that kie answers slowly, with every packet delayed
 * on the way, is waited for (KIE_CREATE_TIMEOUT_MS) and sent once, not given up on as an unknown outcome.
 */
describe('kie behind a TCP proxy', () => {
  const database = useTestDatabase('pglite');
  let kie: SimulatorServer;
  let proxy: TcpProxy;
  let gateway: TestGateway;

  beforeAll(async () => {
    kie = await startSimulatorServer({ knobs: { stepMs: 100, createDelayMs: 0 } });
    proxy = await startTcpProxy({ host: '127.0.0.1', port: Number(new URL(kie.url).port) });
    gateway = await startTestGateway({
      database,
      kieUrl: proxy.url(kie.url),
      env: { KIE_CONNECT_TIMEOUT_MS: '500', KIE_REQUEST_TIMEOUT_MS: '2000', KIE_CREATE_TIMEOUT_MS: '5000' },
    });
  });
  afterAll(async () => {
    await gateway?.stop();
    await proxy?.close();
    await kie?.close();
  });

  it('waits for a kie that answers slowly instead of leaving the outcome unknown', async () => {
    proxy.setLatency(1_500);
    try {
      const before = { ...kie.simulator.stats };
      const created = await createTask(gateway, sampleInput(), 'slow-kie-user');
      expect(created).toMatchObject({ __typename: 'CreateAvatarTaskSuccess', task: { state: 'WAITING' } });
      expect(kie.simulator.stats.createRequests - before.createRequests).toBe(1);
    } finally {
      proxy.setLatency(0);
    }
  });
});
