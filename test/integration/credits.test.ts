import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { databaseKinds, useTestDatabase } from '../helpers/database.js';
import {
  createTaskOk,
  sampleInput,
  startTestGateway,
  type TestGateway,
  waitForState,
} from '../helpers/gateway.js';

/** What the simulator itself says a task consumed, read over HTTP as the gateway's poller would. */
async function kieConsumeCredits(kie: SimulatorServer, upstreamTaskId: string): Promise<unknown> {
  const response = await fetch(
    `${kie.url}/api/v1/jobs/recordInfo?taskId=${encodeURIComponent(upstreamTaskId)}`,
    { headers: { authorization: 'Bearer test-kie-key' } },
  );
  const body = (await response.json()) as { data: { consumeCredits?: unknown } };
  return body.data.consumeCredits;
}

describe.each(databaseKinds())('credits on %s', (kind) => {
  const database = useTestDatabase(kind);

  describe('creditsCharged', () => {
    let kie: SimulatorServer;
    let gateway: TestGateway;

    beforeAll(async () => {
      kie = await startSimulatorServer({ knobs: { stepMs: 100 } });
      // Polls come soon, so a task whose callback is dropped is finished by the poller.
      gateway = await startTestGateway({
        database,
        kieUrl: kie.url,
        env: { KIE_MAX_CREATES_PER_10S: '1000', POLL_MIN_DELAY_MS: '200' },
      });
    });
    afterAll(async () => {
      await gateway?.stop();
      await kie?.close();
    });
    afterEach(() => {
      kie.simulator.knobs.callbackMode = 'normal';
    });

    it.each([
      ['PRO', 'normal', 32],
      ['STANDARD', 'normal', 16],
      ['PRO', 'drop', 32],
    ] as const)(
      'is kie’s consumeCredits for a %s task (callback %s)',
      async (model, callbackMode, credits) => {
        kie.simulator.knobs.callbackMode = callbackMode;
        const user = `payer-${randomUUID()}`;
        const created = await createTaskOk(gateway, sampleInput({ model }), user);
        expect(created.creditsCharged).toBeNull();
        const done = await waitForState(gateway, created.id, 'SUCCEEDED', user);
        // Without a callback the poller's recordInfo is where the cost comes from.
        if (callbackMode === 'drop') expect(done.events.at(-1)?.source).toBe('POLLER');
        expect(done.creditsCharged).toBe(credits);
        expect(await kieConsumeCredits(kie, done.upstreamTaskId ?? '')).toBe(done.creditsCharged);
      },
    );

    it('is 0 for a render kie failed, as kie reports it', async () => {
      const user = `payer-${randomUUID()}`;
      const created = await createTaskOk(gateway, sampleInput({ prompt: '[fail]' }), user);
      const failed = await waitForState(gateway, created.id, 'FAILED', user);
      expect(failed.failure?.code).toBe('GENERATION_FAILED');
      expect(failed.creditsCharged).toBe(0);
      expect(await kieConsumeCredits(kie, failed.upstreamTaskId ?? '')).toBe(0);
    });
  });
});
