import type { TaskFailureCode } from './errors.js';

/**
 * The task state machine. Every change to a task, whatever its source, is planned here, so the rule
 * "states never move backwards and terminal states never change" lives in one place.
 *
 * CANCELED is the gateway's own end for a task kie never got: it is reached from PENDING only, because once kie
 * has a task nothing can stop its render (kie has no cancel).
 */

export const avatarTaskStates = [
  'PENDING',
  'WAITING',
  'QUEUING',
  'GENERATING',
  'SUCCEEDED',
  'FAILED',
  'CANCELED',
] as const;
export type AvatarTaskState = (typeof avatarTaskStates)[number];

export const avatarTaskEventSources = ['MUTATION', 'CALLBACK', 'POLLER', 'TIMEOUT'] as const;
export type AvatarTaskEventSource = (typeof avatarTaskEventSources)[number];

export const upstreamStates = ['waiting', 'queuing', 'generating', 'success', 'fail'] as const;
export type UpstreamState = (typeof upstreamStates)[number];

/** What kie says about a task, from recordInfo or a callback, already parsed. */
export interface UpstreamSnapshot {
  upstreamTaskId: string;
  state: UpstreamState;
  resultUrls: string[];
  failCode?: string | undefined;
  failMessage?: string | undefined;
  /** kie's `consumeCredits`: what the task cost the account, once kie reports it (at its end). */
  creditsCharged?: number | undefined;
}

export interface TaskFailure {
  code: TaskFailureCode;
  message: string;
}

/** Where a change wants to take a task. */
export interface TaskTarget {
  state: AvatarTaskState;
  resultUrls?: string[];
  failure?: TaskFailure;
  message?: string;
}

const rank: Record<AvatarTaskState, number> = {
  PENDING: 0,
  WAITING: 1,
  QUEUING: 2,
  GENERATING: 3,
  SUCCEEDED: 4,
  FAILED: 4,
  CANCELED: 4,
};

/** The states nothing moves out of. */
export const terminalStates = avatarTaskStates.filter((state) => rank[state] === 4);

export function isTerminal(state: AvatarTaskState): boolean {
  return rank[state] === 4;
}

/**
 * Whether moving from `current` to `target` is a change to apply. Anything that is not strictly forward is
 * dropped: a late "generating" after "success", a duplicate callback, a poll that raced a callback.
 */
export function isForward(current: AvatarTaskState, target: AvatarTaskState): boolean {
  if (target === 'CANCELED') return current === 'PENDING';
  return !isTerminal(current) && rank[target] > rank[current];
}

export function targetFromSnapshot(snapshot: UpstreamSnapshot): TaskTarget {
  switch (snapshot.state) {
    case 'waiting':
      return { state: 'WAITING' };
    case 'queuing':
      return { state: 'QUEUING' };
    case 'generating':
      return { state: 'GENERATING' };
    case 'success':
      return { state: 'SUCCEEDED', resultUrls: snapshot.resultUrls };
    case 'fail': {
      const detail = snapshot.failMessage || 'kie reported that generation failed';
      const message = snapshot.failCode ? `${detail} (kie failCode ${snapshot.failCode})` : detail;
      return { state: 'FAILED', failure: { code: 'GENERATION_FAILED', message }, message };
    }
  }
}

/**
 * The poller's next look at a task: the first at `minDelayMs` after submission, then a quarter of the task's
 * age, so a result whose callback was lost lands within 25% of the time the task had taken, with few queries
 * for long tasks. Jitter only shortens the delay, so the 25% bound holds and instances spread out.
 */
export function nextPollDelayMs(
  ageMs: number,
  options: { minDelayMs: number; maxDelayMs: number },
  random: () => number = Math.random,
): number {
  const base = ageMs < options.minDelayMs ? options.minDelayMs - ageMs : ageMs * 0.25;
  const jittered = base * (0.85 + 0.15 * random());
  return Math.round(Math.min(options.maxDelayMs, Math.max(250, jittered)));
}
