/**
 * The history baseline: `GET /tasks?first=20&after=<cursor>` on bare node:http, the bearer token checked, the
 * same keyset SQL as the repository through postgres.js, and the same page shape the GraphQL query returns.
 */
import { createServer } from 'node:http';
import postgres from 'postgres';
import { benchEnv, reportFailure } from '../lib/child.js';
import { Auth, decodeCursor, encodeCursor, encodeGlobalId, sendJson, serveBaseline } from './common.js';
import { TaskSql } from './sql.js';

const env = benchEnv();
const auth = new Auth(env.AUTH_JWT_SECRET ?? '');
const sql = postgres(env.DATABASE_URL ?? '', { max: 10, onnotice: () => {} });
const tasks = new TaskSql(sql);

try {
  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://baseline');
    if (req.method !== 'GET' || url.pathname !== '/tasks') return sendJson(res, 404, { ok: false });
    const userId = await auth.userOf(req.headers.authorization);
    if (!userId) return sendJson(res, 401, { errors: [{ message: 'unauthenticated' }] });
    const first = Math.min(100, Math.max(1, Number(url.searchParams.get('first') ?? 20)));
    const afterText = url.searchParams.get('after');
    const after = afterText ? decodeCursor(afterText) : undefined;
    if (afterText && !after) return sendJson(res, 400, { errors: [{ message: 'bad cursor' }] });
    const page = await tasks.listForUser(userId, first, after);
    const edges = page.rows.map((task) => ({
      cursor: encodeCursor(task.created_at, task.id),
      node: {
        id: encodeGlobalId(task.id),
        state: task.state,
        createdAt: task.created_at,
        videoUrl: task.result_urls[0] ?? null,
      },
    }));
    sendJson(res, 200, {
      data: {
        avatarTasks: {
          edges,
          pageInfo: { hasNextPage: page.hasNextPage, endCursor: edges.at(-1)?.cursor ?? null },
        },
      },
    });
  });
  await serveBaseline(server, sql);
} catch (error) {
  reportFailure(error);
}
