/**
 * The create baseline: `POST /tasks` on bare node:http doing what createAvatarTask does underneath, by hand: the
 * token checked, the input checked, the PENDING row and its event in one transaction, NOTIFY, the submit claim,
 * the same createTask call to the same fake kie with fetch, the WAITING transition, NOTIFY.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import postgres from 'postgres';
import { benchEnv, reportFailure } from '../lib/child.js';
import { Auth, encodeGlobalId, readBody, sendJson, serveBaseline } from './common.js';
import { TaskSql } from './sql.js';

const env = benchEnv();
const auth = new Auth(env.AUTH_JWT_SECRET ?? '');
const sql = postgres(env.DATABASE_URL ?? '', { max: 10, onnotice: () => {} });
const tasks = new TaskSql(sql);
const kieUrl = env.KIE_API_URL ?? '';
const publicUrl = env.PUBLIC_URL ?? 'http://127.0.0.1';
// The gateway's defaults: KIE_REQUEST_TIMEOUT_MS + 5 s of submit lease, and the bench's POLL_MIN_DELAY_MS.
const SUBMIT_LEASE_MS = 35_000;
const MIN_POLL_DELAY_MS = 3_600_000;

function httpUrl(value: unknown): value is string {
  if (typeof value !== 'string' || value.length > 2048) return false;
  try {
    const url = new URL(value);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.hostname !== '';
  } catch {
    return false;
  }
}

async function submit(
  callBackUrl: string,
  imageUrl: string,
  audioUrl: string,
  prompt: string,
): Promise<string> {
  const response = await fetch(`${kieUrl}/api/v1/jobs/createTask`, {
    method: 'POST',
    headers: { authorization: 'Bearer bench-kie-key', 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'kling/ai-avatar-pro',
      callBackUrl,
      input: { image_url: imageUrl, audio_url: audioUrl, prompt },
    }),
    signal: AbortSignal.timeout(30_000),
  });
  const envelope = JSON.parse(await response.text()) as { code?: number; data?: { taskId?: string } };
  const taskId = envelope.data?.taskId;
  if (!response.ok || envelope.code !== 200 || !taskId) throw new Error(`kie answered ${envelope.code}`);
  return taskId;
}

try {
  const server = createServer(async (req, res) => {
    if (req.method !== 'POST' || req.url !== '/tasks') return sendJson(res, 404, { ok: false });
    const userId = await auth.userOf(req.headers.authorization);
    if (!userId) return sendJson(res, 401, { errors: [{ message: 'unauthenticated' }] });
    const input = JSON.parse(await readBody(req)) as {
      imageUrl?: unknown;
      audioUrl?: unknown;
      prompt?: unknown;
    };
    const prompt = typeof input.prompt === 'string' ? input.prompt : null;
    if (!httpUrl(input.imageUrl) || !httpUrl(input.audioUrl) || (prompt?.length ?? 0) > 5000) {
      return sendJson(res, 200, {
        data: { createAvatarTask: { __typename: 'InvalidInputError', code: 'INVALID_INPUT' } },
      });
    }
    const now = new Date();
    const row = await tasks.insertPending({
      id: randomUUID(),
      userId,
      imageUrl: input.imageUrl,
      audioUrl: input.audioUrl,
      prompt,
      inputHash: createHash('sha256')
        .update(JSON.stringify(['PRO', input.imageUrl, input.audioUrl, prompt ?? '']))
        .digest('hex'),
      callbackSecret: randomBytes(24).toString('base64url'),
      nextCheckAt: new Date(now.getTime() + SUBMIT_LEASE_MS),
      now,
    });
    if (!row) return sendJson(res, 500, { errors: [{ message: 'insert conflicted' }] });
    await tasks.notify(row);
    const claimed = await tasks.claimSubmit(row.id, SUBMIT_LEASE_MS);
    if (!claimed) return sendJson(res, 500, { errors: [{ message: 'not claimed' }] });
    const callBackUrl = `${publicUrl}/callbacks/kie/${claimed.id}/${claimed.callback_secret}`;
    const upstreamTaskId = await submit(
      callBackUrl,
      claimed.image_url,
      claimed.audio_url,
      claimed.prompt ?? '',
    );
    const accepted = new Date();
    const result = await tasks.transition(row.id, 'MUTATION', (task) => ({
      target: { state: 'WAITING' },
      patch: {
        upstream_task_id: task.upstream_task_id ?? upstreamTaskId,
        submit_status: 'accepted',
        submitted_at: accepted,
        lease_until: null,
        next_check_at: new Date(accepted.getTime() + MIN_POLL_DELAY_MS),
      },
    }));
    if (result?.changed) await tasks.notify(result.row);
    const task = result?.row ?? claimed;
    sendJson(res, 200, {
      data: {
        createAvatarTask: {
          __typename: 'CreateAvatarTaskSuccess',
          task: { id: encodeGlobalId(task.id), state: task.state, upstreamTaskId: task.upstream_task_id },
        },
      },
    });
  });
  await serveBaseline(server, sql);
} catch (error) {
  reportFailure(error);
}
