import { describe, expect, it } from 'vitest';
import {
  type AvatarTaskState,
  avatarTaskStates,
  isForward,
  isTerminal,
  nextPollDelayMs,
  targetFromSnapshot,
  type UpstreamSnapshot,
} from '../../src/tasks/states.js';

// Written out by hand rather than derived from the code's ranks, so a wrong rank shows up here.
// CANCELED is reached from PENDING only: a task kie has cannot be stopped.
const forwardTargets: Record<AvatarTaskState, AvatarTaskState[]> = {
  PENDING: ['WAITING', 'QUEUING', 'GENERATING', 'SUCCEEDED', 'FAILED', 'CANCELED'],
  WAITING: ['QUEUING', 'GENERATING', 'SUCCEEDED', 'FAILED'],
  QUEUING: ['GENERATING', 'SUCCEEDED', 'FAILED'],
  GENERATING: ['SUCCEEDED', 'FAILED'],
  SUCCEEDED: [],
  FAILED: [],
  CANCELED: [],
};

const pairs = avatarTaskStates.flatMap((from) =>
  avatarTaskStates.map((to) => ({ from, to, forward: forwardTargets[from].includes(to) })),
);

const order = (state: AvatarTaskState) => (isTerminal(state) ? 4 : avatarTaskStates.indexOf(state));

/** Applies targets the way the repository does: only forward moves change the state. */
function replay(start: AvatarTaskState, targets: AvatarTaskState[]): AvatarTaskState[] {
  const seen = [start];
  let state = start;
  for (const target of targets) {
    if (isForward(state, target)) state = target;
    seen.push(state);
  }
  return seen;
}

describe('isForward', () => {
  it.each(pairs)('$from → $to is forward: $forward', ({ from, to, forward }) => {
    expect(isForward(from, to)).toBe(forward);
  });

  it('only SUCCEEDED, FAILED and CANCELED are terminal', () => {
    expect(avatarTaskStates.filter(isTerminal)).toEqual(['SUCCEEDED', 'FAILED', 'CANCELED']);
  });

  it('never moves a task backwards and never changes a terminal state, in any order of arrivals', () => {
    // Every sequence of four updates over all seven states: callbacks, polls and cancels in any order.
    const sequences: AvatarTaskState[][] = [[]];
    for (let length = 0; length < 4; length++) {
      const next: AvatarTaskState[][] = [];
      for (const sequence of sequences) for (const state of avatarTaskStates) next.push([...sequence, state]);
      sequences.splice(0, sequences.length, ...next);
    }
    expect(sequences).toHaveLength(7 ** 4);
    for (const sequence of sequences) {
      const seen = replay('PENDING', sequence);
      for (let i = 1; i < seen.length; i++) {
        const before = seen[i - 1] as AvatarTaskState;
        const after = seen[i] as AvatarTaskState;
        expect(order(after)).toBeGreaterThanOrEqual(order(before));
        if (isTerminal(before)) expect(after).toBe(before);
      }
    }
  });

  it('a cancel after kie acknowledged the task changes nothing, and nothing changes a canceled task', () => {
    expect(replay('PENDING', ['WAITING', 'CANCELED']).at(-1)).toBe('WAITING');
    expect(replay('PENDING', ['CANCELED', 'WAITING', 'SUCCEEDED', 'FAILED'])).toEqual([
      'PENDING',
      'CANCELED',
      'CANCELED',
      'CANCELED',
      'CANCELED',
    ]);
  });

  it('a late "generating" after success and a duplicate success change nothing', () => {
    expect(replay('WAITING', ['SUCCEEDED', 'GENERATING', 'SUCCEEDED', 'FAILED']).at(-1)).toBe('SUCCEEDED');
    expect(replay('PENDING', ['GENERATING', 'WAITING', 'QUEUING'])).toEqual([
      'PENDING',
      'GENERATING',
      'GENERATING',
      'GENERATING',
    ]);
  });
});

describe('targetFromSnapshot', () => {
  const snapshot = (overrides: Partial<UpstreamSnapshot>): UpstreamSnapshot => ({
    upstreamTaskId: 'task_1',
    state: 'waiting',
    resultUrls: [],
    ...overrides,
  });

  it.each([
    ['waiting', 'WAITING'],
    ['queuing', 'QUEUING'],
    ['generating', 'GENERATING'],
  ] as const)("maps kie's %s to %s without results or failure", (upstream, state) => {
    const target = targetFromSnapshot(snapshot({ state: upstream }));
    expect(target).toEqual({ state });
  });

  it('maps success to SUCCEEDED with the result URLs', () => {
    const urls = ['https://cdn.example/a.mp4', 'https://cdn.example/b.mp4'];
    expect(targetFromSnapshot(snapshot({ state: 'success', resultUrls: urls }))).toEqual({
      state: 'SUCCEEDED',
      resultUrls: urls,
    });
  });

  it("maps fail to FAILED with code GENERATION_FAILED, kie's message and failCode", () => {
    const target = targetFromSnapshot(
      snapshot({ state: 'fail', failCode: '500', failMessage: 'face not detected' }),
    );
    expect(target.state).toBe('FAILED');
    expect(target.failure?.code).toBe('GENERATION_FAILED');
    expect(target.failure?.message).toContain('face not detected');
    expect(target.failure?.message).toContain('500');
    expect(target.message).toBe(target.failure?.message);
  });

  it('gives a failure without kie detail a readable message', () => {
    const target = targetFromSnapshot(snapshot({ state: 'fail' }));
    expect(target.failure?.code).toBe('GENERATION_FAILED');
    expect(target.failure?.message.length).toBeGreaterThan(10);
  });
});

describe('nextPollDelayMs', () => {
  const options = { minDelayMs: 30_000, maxDelayMs: 300_000 };
  const randoms = [0, 0.25, 0.5, 0.999999, 1];

  it('puts the first poll at the minimum delay after submission (jitter only shortens it)', () => {
    for (const random of randoms) {
      const delay = nextPollDelayMs(0, options, () => random);
      expect(delay).toBeLessThanOrEqual(30_000);
      expect(delay).toBeGreaterThanOrEqual(30_000 * 0.85);
    }
    expect(nextPollDelayMs(0, options, () => 1)).toBe(30_000);
    // Part of the minimum delay already spent: only the rest is waited.
    expect(nextPollDelayMs(20_000, options, () => 1)).toBe(10_000);
  });

  it('waits at most a quarter of the task age afterwards, so a lost callback is noticed within 25%', () => {
    for (const age of [30_000, 45_000, 60_000, 120_000, 600_000, 1_000_000]) {
      for (const random of randoms) {
        const delay = nextPollDelayMs(age, options, () => random);
        expect(delay).toBeLessThanOrEqual(age * 0.25);
        expect(delay).toBeGreaterThanOrEqual(Math.min(age * 0.25 * 0.85, options.maxDelayMs) - 1);
      }
    }
  });

  it('never waits longer than the maximum delay', () => {
    for (const age of [2_000_000, 10_000_000, 1e9]) {
      for (const random of randoms) {
        expect(nextPollDelayMs(age, options, () => random)).toBeLessThanOrEqual(300_000);
      }
    }
    expect(nextPollDelayMs(1e9, { minDelayMs: 0, maxDelayMs: 5_000 }, () => 0.5)).toBe(5_000);
  });

  it('never hammers kie with a near-zero delay', () => {
    for (const age of [0, 1, 100, 999]) {
      expect(nextPollDelayMs(age, { minDelayMs: 0, maxDelayMs: 300_000 }, () => 0)).toBeGreaterThanOrEqual(
        250,
      );
    }
  });

  it('spreads instances out: different random draws give different delays', () => {
    const delays = new Set(randoms.map((random) => nextPollDelayMs(100_000, options, () => random)));
    expect(delays.size).toBeGreaterThan(1);
  });
});
