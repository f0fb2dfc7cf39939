import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type SimulatorServer, startSimulatorServer } from '../../src/upstream/simulator.js';
import { databaseKinds, useTestDatabase } from '../helpers/database.js';
import {
  createTask,
  createTaskOk,
  metric,
  sampleInput,
  signToken,
  startTestGateway,
  type TestGateway,
  waitForState,
} from '../helpers/gateway.js';

/** Sets the simulator's balance over HTTP, as an operator of the fake account would. */
async function setKieCredits(kie: SimulatorServer, credits: number): Promise<void> {
  const response = await fetch(`${kie.url}/admin/credits`, {
    method: 'POST',
    headers: { authorization: 'Bearer test-kie-key', 'content-type': 'application/json' },
    body: JSON.stringify({ credits }),
  });
  expect(response.status).toBe(200);
}

/** `kieAccount` as a user whose token carries `claims`. */
async function kieAccount(gateway: TestGateway, claims: Record<string, unknown>) {
  const response = await fetch(gateway.graphqlUrl, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      authorization: `Bearer ${await signToken('ops', '1h', claims)}`,
    },
    body: JSON.stringify({ query: 'query { kieAccount { creditBalance checkedAt createsPaused } }' }),
  });
  return {
    status: response.status,
    body: (await response.json()) as {
      data?: { kieAccount: { creditBalance: number; checkedAt: string; createsPaused: boolean } } | null;
      errors?: Array<{ message: string; extensions?: { code?: string } }>;
    },
  };
}

async function historyLength(gateway: TestGateway, user: string): Promise<number> {
  const result = await gateway.gql<{ avatarTasks: { edges: unknown[] } }>(
    'query { avatarTasks(first: 100) { edges { cursor } } }',
    {},
    user,
  );
  return result.data?.avatarTasks.edges.length ?? -1;
}

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

  describe('after kie answers 402', () => {
    const cooldownMs = 3_000;
    let kie: SimulatorServer;
    let gateway: TestGateway;

    beforeAll(async () => {
      kie = await startSimulatorServer({ knobs: { stepMs: 50 } });
      gateway = await startTestGateway({
        database,
        kieUrl: kie.url,
        env: { KIE_MAX_CREATES_PER_10S: '1000', KIE_CREDITS_COOLDOWN_MS: String(cooldownMs) },
      });
    });
    afterAll(async () => {
      await gateway?.stop();
      await kie?.close();
    });

    it('refuses creates at once with no call to kie until the probe after the cool-down goes through', async () => {
      const user = `broke-${randomUUID()}`;
      await setKieCredits(kie, 0);
      const first = await createTask(gateway, sampleInput({ idempotencyKey: 'first' }), user);
      expect(first).toMatchObject({ __typename: 'InsufficientCreditsError', code: 'INSUFFICIENT_CREDITS' });
      const opened = Date.now();
      expect(kie.simulator.stats.createRequests).toBe(1);
      expect(await metric(gateway, 'avatar_gateway_kie_creates_paused')).toBe(1);

      // The account is topped up, but the gateway does not know yet: within the cool-down nothing is sent,
      // nothing is stored, and a retry of the refused create gets its stored task back.
      await setKieCredits(kie, 1_000);
      for (let i = 0; i < 3; i++) {
        const refused = await createTask(gateway, sampleInput({ prompt: `held back ${i}` }), user);
        expect(refused).toMatchObject({
          __typename: 'InsufficientCreditsError',
          code: 'INSUFFICIENT_CREDITS',
        });
        expect('message' in refused && refused.message).toMatch(/out of credits/);
      }
      const retried = await createTask(gateway, sampleInput({ idempotencyKey: 'first' }), user);
      expect('task' in retried && retried.task.state).toBe('FAILED');
      expect(Date.now() - opened).toBeLessThan(cooldownMs);
      expect(kie.simulator.stats.createRequests).toBe(1);
      expect(await historyLength(gateway, user)).toBe(1);

      // After the cool-down the next create is the probe; kie takes it, and creates flow again.
      await new Promise((resolve) => setTimeout(resolve, cooldownMs - (Date.now() - opened) + 50));
      const probe = await createTaskOk(gateway, sampleInput({ prompt: 'probe' }), user);
      expect(probe.state).toBe('WAITING');
      const after = await createTaskOk(gateway, sampleInput({ prompt: 'after' }), user);
      expect(after.state).toBe('WAITING');
      expect(kie.simulator.stats.createRequests).toBe(3);
      expect(await metric(gateway, 'avatar_gateway_kie_creates_paused')).toBe(0);
      await waitForState(gateway, after.id, 'SUCCEEDED', user);
    });

    it('opens again at once when the probe is refused with 402 too', async () => {
      const user = `still-broke-${randomUUID()}`;
      await setKieCredits(kie, 0);
      const before = kie.simulator.stats.createRequests;
      expect(await createTask(gateway, sampleInput(), user)).toMatchObject({ code: 'INSUFFICIENT_CREDITS' });
      await new Promise((resolve) => setTimeout(resolve, cooldownMs + 50));
      // The probe goes to kie and is refused; the next create is refused without a call.
      expect(await createTask(gateway, sampleInput(), user)).toMatchObject({ code: 'INSUFFICIENT_CREDITS' });
      expect(await createTask(gateway, sampleInput(), user)).toMatchObject({ code: 'INSUFFICIENT_CREDITS' });
      expect(kie.simulator.stats.createRequests - before).toBe(2);
      await setKieCredits(kie, 1_000);
    });
  });

  describe('the operator-only kieAccount', () => {
    const ttlMs = 3_000;
    const warnings: string[] = [];
    let kie: SimulatorServer;
    let gateway: TestGateway;

    beforeAll(async () => {
      kie = await startSimulatorServer({ knobs: { stepMs: 50, credits: 5_000 } });
      const capture = new Writable({
        write(chunk, _encoding, done) {
          const line = JSON.parse(String(chunk)) as { level: number; msg: string };
          if (line.level === 40) warnings.push(line.msg);
          done();
        },
      });
      gateway = await startTestGateway({
        database,
        kieUrl: kie.url,
        logger: pino({ level: 'warn' }, capture),
        env: {
          AUTH_OPERATOR_CLAIM: 'groups',
          AUTH_OPERATOR_ROLE: 'billing',
          KIE_CREDITS_CACHE_MS: String(ttlMs),
          KIE_LOW_CREDITS_THRESHOLD: '1000',
        },
      });
    });
    afterAll(async () => {
      await gateway?.stop();
      await kie?.close();
    });

    it("shows kie's balance to operators, cached, and refuses everyone else with FORBIDDEN", async () => {
      const first = await kieAccount(gateway, { groups: ['billing'] });
      expect(first.body.data?.kieAccount).toMatchObject({ creditBalance: 5_000, createsPaused: false });
      const checks = kie.simulator.stats.creditChecks;
      // Within the cache's life kie is not asked again, however often the balance is read.
      await setKieCredits(kie, 900);
      const spaced = await kieAccount(gateway, { groups: 'audit billing' });
      expect(spaced.body.data?.kieAccount.creditBalance).toBe(5_000);
      expect(kie.simulator.stats.creditChecks).toBe(checks);

      for (const claims of [{}, { groups: ['audit'] }, { roles: ['billing'] }, { groups: 'billing-admin' }]) {
        const refused = await kieAccount(gateway, claims);
        expect(refused.body.data ?? null).toBeNull();
        expect(refused.body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
        expect(refused.body.errors?.[0]?.message).toMatch(/operator/i);
      }

      // Past the cache's life the new balance shows, on the gauge too, and its fall below the threshold is
      // logged as a warning, once.
      await new Promise((resolve) => setTimeout(resolve, ttlMs + 100));
      const fresh = await kieAccount(gateway, { groups: ['billing'] });
      expect(fresh.body.data?.kieAccount.creditBalance).toBe(900);
      expect(await metric(gateway, 'avatar_gateway_kie_credit_balance')).toBe(900);
      await new Promise((resolve) => setTimeout(resolve, ttlMs + 100));
      expect(warnings.filter((message) => message.includes('credit balance is low'))).toHaveLength(1);
    });
  });
});
