import type { Plugin } from 'graphql-yoga';
import type { Registry } from 'prom-client';
import { DeadlineExceededError, withDeadline } from '../deadline.js';
import { type MetricsAccess, refuseMetrics } from './metrics-access.js';

/** /readyz answers within a second, whatever it waits on: a probe that hangs is worse than a "no". */
export const READINESS_DEADLINE_MS = 900;

/**
 * Small non-GraphQL routes as yoga plugins (like yoga's own readiness check), so one server and one request
 * pipeline serve everything.
 */
export function useRoute(
  matches: (pathname: string) => boolean,
  handle: (request: Request, pathname: string) => Response | Promise<Response>,
): Plugin {
  return {
    async onRequest({ request, url, endResponse }) {
      if (matches(url.pathname)) endResponse(await handle(request, url.pathname));
    },
  };
}

/** Each readiness check by name (database, listener, poller): ready when all hold. */
export type ReadinessChecks = Record<string, boolean>;

export function useHealthRoutes(checkReadiness: () => Promise<ReadinessChecks>): Plugin[] {
  return [
    useRoute(
      (path) => path === '/healthz',
      () => Response.json({ status: 'ok' }),
    ),
    useRoute(
      (path) => path === '/readyz',
      async () => {
        const checks = await withDeadline(
          checkReadiness(),
          READINESS_DEADLINE_MS,
          () => new DeadlineExceededError('readiness check timed out'),
        ).catch((): ReadinessChecks => ({ answered: false }));
        const ready = Object.values(checks).every(Boolean);
        return Response.json(
          { status: ready ? 'ready' : 'not ready', checks },
          { status: ready ? 200 : 503 },
        );
      },
    ),
  ];
}

export function useMetricsRoute(registry: Registry, access: MetricsAccess): Plugin {
  return useRoute(
    (path) => path === '/metrics',
    async (request) =>
      refuseMetrics(access, request.headers.get('authorization')) ??
      new Response(await registry.metrics(), { headers: { 'content-type': registry.contentType } }),
  );
}
