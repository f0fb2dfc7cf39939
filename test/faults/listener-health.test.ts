import { describe, expect, it } from 'vitest';
import { hasPostgres, useTestDatabase } from '../helpers/database.js';
import { createTaskOk, sampleInput, type TestGateway } from '../helpers/gateway.js';
import {
  connectWs,
  postSuccessCallback,
  TASK_UPDATED,
  type TaskUpdatedData,
  taskRow,
  tasksOf,
} from '../helpers/subscriptions.js';
import { useFaultStack } from './fault-stack.js';

interface Readiness {
  status: number;
  checks: Record<string, boolean>;
}

async function readiness(gateway: TestGateway): Promise<Readiness> {
  const response = await fetch(`${gateway.url}/readyz`);
  const body = (await response.json()) as { checks?: Record<string, boolean> };
  return { status: response.status, checks: body.checks ?? {} };
}

/** Polls /readyz every 20 ms until `predicate` holds; returns the answer and when it came (ms from `from`). */
async function readinessUntil(
  gateway: TestGateway,
  predicate: (answer: Readiness) => boolean,
  from: number,
  timeoutMs: number,
): Promise<Readiness & { atMs: number }> {
  for (;;) {
    const answer = await readiness(gateway);
    const atMs = Math.round(performance.now() - from);
    if (predicate(answer)) return { ...answer, atMs };
    if (atMs > timeoutMs) throw new Error(`/readyz never matched; last ${JSON.stringify(answer)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Issue 9, seen 1 (the listener half): a LISTEN connection that died without a word was never checked, so
 * live updates stopped for good while /readyz stayed green. Now its own heartbeat proves it alive: a deaf
 * listener makes /readyz 503 (checks.listener false), is recycled, every live stream re-reads its task, and
 * /readyz is 200 again.
 */
describe.skipIf(!hasPostgres())('the LISTEN connection', () => {
  const database = useTestDatabase('postgres');
  const startStack = useFaultStack(database);

  it('is found deaf by its heartbeat, /readyz says so, and after its recycling every stream catches up', async () => {
    const heartbeatMs = 1_000;
    // kie finishes at once but its callback is lost: the one this test posts later is the only news, and
    // the gateway confirms it with kie before storing it.
    const { proxy, gateway } = await startStack(
      { stepMs: 50, callbackMode: 'drop' },
      { DB_LISTEN_HEARTBEAT_MS: String(heartbeatMs) },
    );
    const task = await createTaskOk(gateway, sampleInput());
    const row = await taskRow(gateway, task.id);
    const socket = await connectWs(gateway, 'alice');
    const received = socket.subscribe<TaskUpdatedData>({ query: TASK_UPDATED, variables: { id: task.id } });
    await received.until((r) => r.results.length > 0);
    expect((await readiness(gateway)).status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 500));

    // Only the listener's flow goes silent; the pool's connections keep working.
    const silenced = proxy.blackHole({ where: (flow) => flow.sent.includes('listen "avatar_task_updated"') });
    expect(silenced).toBe(1);
    const diedAt = performance.now();

    // A change the deaf listener cannot hear: stored through the pool, its NOTIFY lost.
    expect(await postSuccessCallback(gateway, row)).toBe(200);

    const deaf = await readinessUntil(gateway, (answer) => answer.status === 503, diedAt, 4 * heartbeatMs);
    const back = await readinessUntil(gateway, (answer) => answer.status === 200, diedAt, 6 * heartbeatMs);
    await received.waitForEnd(6 * heartbeatMs);
    const heardMs = Math.round((received.arrivals.at(-1) ?? diedAt) - diedAt);
    const states = tasksOf(received).map((update) => update.state);
    console.log(
      'deaf listener:',
      JSON.stringify({ deafAtMs: deaf.atMs, checks: deaf.checks, readyAgainMs: back.atMs, heardMs, states }),
    );
    await socket.dispose();

    expect(deaf.checks).toMatchObject({ database: true, listener: false });
    expect(back.checks).toEqual({ database: true, listener: true, poller: true });
    expect(states.at(-1)).toBe('SUCCEEDED');
    expect(received.ending).toEqual({ kind: 'complete' });
  });
});
