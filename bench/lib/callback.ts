import { createHmac } from 'node:crypto';
import { BENCH_HMAC_KEY } from './tokens.js';

/** kie's callback as UPSTREAM.md describes it, signed with the webhook HMAC, for the scenarios that drive callbacks. */

export type KieState = 'waiting' | 'queuing' | 'generating' | 'success' | 'fail';

export function callbackBody(upstreamTaskId: string, state: KieState, resultUrl: string): string {
  const success = state === 'success';
  return JSON.stringify({
    code: state === 'fail' ? 501 : 200,
    msg: success ? 'Playground task completed successfully.' : 'Playground task update.',
    data: {
      taskId: upstreamTaskId,
      model: 'kling/ai-avatar-pro',
      state,
      resultJson: success ? JSON.stringify({ resultUrls: [resultUrl] }) : '',
      consumeCredits: success ? 32 : 0,
      costTime: 8,
      createTime: Date.now() - 8000,
      ...(success ? { completeTime: Date.now() } : {}),
    },
  });
}

export function signatureHeaders(upstreamTaskId: string, key = BENCH_HMAC_KEY): Record<string, string> {
  const timestamp = String(Math.floor(Date.now() / 1000));
  return {
    'content-type': 'application/json',
    'x-webhook-timestamp': timestamp,
    'x-webhook-signature': createHmac('sha256', key)
      .update(`${upstreamTaskId}.${timestamp}`)
      .digest('base64'),
  };
}

export function callbackPath(taskId: string, secret: string): string {
  return `/callbacks/kie/${taskId}/${secret}`;
}
