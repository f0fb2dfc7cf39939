import type { KieModel } from './kie-client.js';

/**
 * What kie charges per second of output video (UPSTREAM.md: about 16 for Pro, 8 for Standard). The video is
 * as long as the audio, so a task's price follows from the audio's duration.
 */
export const creditsPerSecond: Record<KieModel, number> = {
  'kling/ai-avatar-pro': 16,
  'kling/ai-avatar-standard': 8,
};

/** Credits a task of `durationSeconds` of audio should cost, to a hundredth of a credit. */
export function estimateCredits(model: KieModel, durationSeconds: number): number {
  return Math.round(creditsPerSecond[model] * durationSeconds * 100) / 100;
}
