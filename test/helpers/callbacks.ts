import { createHmac } from 'node:crypto';
import type { TestGateway } from './gateway.js';

/** A result URL no real kie task would have: a callback that plants it was applied. */
export const FORGED_VIDEO = 'https://attacker.example/forged.mp4';

/** A kie callback body in kie's format (UPSTREAM.md), for `state`; `extra` lands in `data`. */
export function callbackBody(
  upstreamTaskId: string,
  state: string,
  extra: Record<string, unknown> = {},
): string {
  return JSON.stringify({
    code: state === 'fail' ? 501 : 200,
    msg: 'callback',
    data: {
      taskId: upstreamTaskId,
      state,
      resultJson: state === 'success' ? JSON.stringify({ resultUrls: [FORGED_VIDEO] }) : '',
      ...(state === 'fail' ? { failCode: '500', failMsg: 'forged failure' } : {}),
      ...extra,
    },
  });
}

/** kie's webhook signature headers: an HMAC-SHA256 of `taskId.timestamp` with the webhook key. */
export function signCallback(upstreamTaskId: string, timestamp: number, key: string): Record<string, string> {
  return {
    'x-webhook-timestamp': String(timestamp),
    'x-webhook-signature': createHmac('sha256', key)
      .update(`${upstreamTaskId}.${timestamp}`)
      .digest('base64'),
  };
}

/** POSTs a callback to `/callbacks/kie/<path>` and returns the status, the answer read to its end. */
export async function postCallback(
  gateway: TestGateway,
  path: string,
  payload: BodyInit,
  headers: Record<string, string> = {},
): Promise<number> {
  const response = await fetch(`${gateway.url}/callbacks/kie/${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: payload,
    ...(payload instanceof ReadableStream ? { duplex: 'half' } : {}),
  } as RequestInit);
  await response.arrayBuffer();
  return response.status;
}
