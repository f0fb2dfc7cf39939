import { describe, expect, it } from 'vitest';
import type { AvatarTaskRow } from '../../src/db/schema.js';
import { CallbackHealth } from '../../src/poller/poller.js';

const submittedAt = new Date('2025-01-01T00:00:00.000Z');

/** A task that finished `durationMs` after it was submitted. */
function finished(durationMs: number): AvatarTaskRow {
  return {
    id: '00000000-0000-4000-8000-000000000000',
    userId: 'alice',
    state: 'SUCCEEDED',
    model: 'PRO',
    imageUrl: 'https://example.com/face.png',
    audioUrl: 'https://example.com/voice.mp3',
    prompt: null,
    estimatedCredits: null,
    idempotencyKey: null,
    inputHash: 'hash',
    callbackSecret: 'secret',
    upstreamTaskId: 'task_kling_1',
    resultUrls: ['https://example.com/out.mp4'],
    failureCode: null,
    failureMessage: null,
    creditsCharged: null,
    version: 3,
    submitStatus: 'accepted',
    submitAttempts: 1,
    submittedAt,
    nextCheckAt: null,
    pollAttempts: 0,
    leaseUntil: null,
    watchedUntil: null,
    createdAt: submittedAt,
    updatedAt: new Date(submittedAt.getTime() + durationMs),
    completedAt: new Date(submittedAt.getTime() + durationMs),
  };
}

describe('CallbackHealth', () => {
  it('keeps the usual poll schedule while it has not seen enough results', () => {
    const health = new CallbackHealth();
    for (let i = 0; i < 9; i++) health.record(finished(1_000), 'CALLBACK');
    expect(health.quietPeriodMs()).toBe(0);
  });

  it('leaves young tasks to their callback once callbacks bring the results', () => {
    const health = new CallbackHealth();
    // Durations 1 s .. 20 s: the 95th percentile is 19 s, and a task is overdue at 1.5 times that.
    for (let i = 1; i <= 20; i++) health.record(finished(i * 1_000), 'CALLBACK');
    expect(health.quietPeriodMs()).toBe(28_500);
  });

  it('goes back to the usual schedule when polls find results whose callback never came', () => {
    const health = new CallbackHealth();
    for (let i = 1; i <= 20; i++) health.record(finished(i * 1_000), 'CALLBACK');
    // Two lost callbacks in 22 results is under one in ten: still reliable. A third is not.
    health.record(finished(5_000), 'POLLER');
    health.record(finished(6_000), 'POLLER');
    expect(health.quietPeriodMs()).toBeGreaterThan(0);
    health.record(finished(7_000), 'POLLER');
    expect(health.quietPeriodMs()).toBe(0);
    // Callbacks arriving again push the lost ones out of the window, and the quiet period returns.
    for (let i = 0; i < 50; i++) health.record(finished(2_000), 'CALLBACK');
    expect(health.quietPeriodMs()).toBeGreaterThan(0);
  });

  it('does not count timeouts and mutations for or against callbacks', () => {
    const health = new CallbackHealth();
    for (let i = 0; i < 20; i++) health.record(finished(1_000), 'TIMEOUT');
    for (let i = 0; i < 20; i++) health.record(finished(1_000), 'MUTATION');
    expect(health.quietPeriodMs()).toBe(0);
  });
});
