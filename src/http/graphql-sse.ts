import { type ExecutionArgs, type ExecutionResult, GraphQLError } from 'graphql';
import { type Response as SseResponse, TOKEN_HEADER_KEY, TOKEN_QUERY_KEY } from 'graphql-sse';
import { createHandler } from 'graphql-sse/lib/use/fetch';
import { type Plugin, processRegularResult } from 'graphql-yoga';
import type { Logger } from 'pino';
import { bearerToken, type TokenVerifier, type Viewer } from '../auth/tokens.js';
import type { Metrics } from '../metrics.js';
import { createOperationGate } from './operation-gate.js';
import { capUpdates } from './output-limits.js';
import { bodyTooLargeResponse, readFetchBody } from './request-body.js';
import type { SseReservations } from './sse-reservations.js';

export interface GraphQLSSEOptions {
  verifier: TokenVerifier;
  /** Single connection mode: the reservations this server minted, each bound to a user. */
  reservations: SseReservations;
  logger: Logger;
  metrics: Metrics;
  /** A request body over this is refused with 413, as yoga refuses one on /graphql. */
  maxBodyBytes: number;
  /** A subscription update serialised larger than this ends the stream with an error. */
  maxUpdateBytes: number;
}

/**
 * graphql-sse's protocol, admitted through the operation gate like the other transports. This replaces
 * `@graphql-yoga/plugin-graphql-sse`, whose handler answers 400 "Unable to detect operation AST" to a result
 * with errors but no `data` key (graphql-js's shape when a subscription cannot start, e.g. NOT_FOUND) and
 * 500 when the context refuses the token; here the first arrives as one error event and the second as 401.
 */
export function useGraphQLSSEProtocol(endpoint: string, options: GraphQLSSEOptions): Plugin {
  const { verifier, reservations } = options;
  const serverContexts = new WeakMap<Request, object>();
  /** Requests this plugin makes itself to learn whether a reservation's stream is open (see probe). */
  const probes = new WeakMap<Request, string>();
  let handler: ((request: Request) => Promise<Response>) | undefined;
  let fetchAPI: { Request: typeof Request; Response: typeof Response } | undefined;
  const refuse = (status: number, errors: readonly GraphQLError[]): SseResponse => [
    JSON.stringify({ errors: errors.map(withoutInternals) }),
    {
      status,
      statusText: STATUS_TEXT[status] ?? 'Bad Request',
      headers: { 'content-type': 'application/json; charset=utf-8' },
    },
  ];
  /**
   * A result refused as a whole, with an HTTP status (UNAUTHENTICATED's 401, SERVICE_UNAVAILABLE's 503),
   * answered exactly as yoga answers it on /graphql: that status and yoga's body, not a 200 stream.
   */
  const answerAsYoga = async (
    result: ExecutionResult,
    api: Parameters<typeof processRegularResult>[1],
  ): Promise<SseResponse> => {
    const response = await processRegularResult(result, api, 'application/json');
    return [
      await response.text(),
      {
        status: response.status,
        statusText: response.statusText,
        headers: Object.fromEntries(response.headers),
      },
    ];
  };
  const refuseWith = (status: number, message: string, code: string) =>
    refuse(status, [new GraphQLError(message, { extensions: { code } })]);

  /** The user of a request that must have one, or graphql-sse's answer refusing it. */
  const viewerOf = async (request: Request): Promise<Viewer | SseResponse> => {
    try {
      const token = bearerToken(request.headers.get('authorization'));
      if (token) return await verifier.verify(token);
    } catch {
      // Refused below, as a missing token is.
    }
    return refuseWith(401, 'Single connection mode needs Authorization: Bearer <token>', 'UNAUTHENTICATED');
  };

  /**
   * graphql-sse's default lets the client choose the stream token and keeps a reservation forever. Here a
   * reservation (PUT) needs a valid token, its stream token is minted by the server, and every later request
   * on it (the listener, operations, cancels) must come from the same user; another user's reservation
   * answers as one that does not exist.
   */
  const authenticate = async (request: Request): Promise<SseResponse | string | null> => {
    const probed = probes.get(request);
    if (probed) return probed;
    const chosen =
      request.headers.get(TOKEN_HEADER_KEY) ?? new URL(request.url).searchParams.get(TOKEN_QUERY_KEY);
    // Distinct connections mode: the operation's own context authenticates it, as over plain HTTP.
    if (request.method !== 'PUT' && !chosen) return null;
    const viewer = await viewerOf(request);
    if (!('id' in viewer)) return viewer;
    if (request.method === 'PUT') {
      if (chosen) {
        return refuseWith(400, 'The server chooses the stream token: reserve without one', 'BAD_REQUEST');
      }
      return (
        reservations.reserve(viewer.id) ??
        refuseWith(429, 'Too many stream reservations for this user', 'TOO_MANY_RESERVATIONS')
      );
    }
    if (reservations.ownerOf(chosen as string) !== viewer.id) {
      return refuseWith(404, 'Stream not found', 'NOT_FOUND');
    }
    return chosen;
  };

  return {
    onYogaInit({ yoga }) {
      const gate = createOperationGate(yoga, options.logger, options.metrics);
      fetchAPI = yoga.fetchAPI;
      reservations.useProbe(async (token) => {
        const request = new yoga.fetchAPI.Request(`http://localhost${endpoint}`, {
          headers: { accept: 'text/event-stream', [TOKEN_HEADER_KEY]: token },
        });
        probes.set(request, token);
        const response = await (handler as (request: Request) => Promise<Response>)(request);
        if (response.status === 409) return 'open';
        // Taking the unused stream and cancelling it is how graphql-sse disposes of a reservation.
        await response.body?.cancel();
        return 'gone';
      });
      handler = createHandler(
        {
          authenticate: (request) => authenticate(request.raw),
          onSubscribe: async (request, params) => {
            const admission = gate.admit(
              params,
              Object.assign({}, serverContexts.get(request.raw), {
                request: request.raw,
                transport: 'graphql-sse' as const,
              }),
            );
            if (!admission.admitted) return refuse(400, admission.errors);
            const { envelope: enveloped, document, operation } = admission;
            let contextValue: unknown;
            try {
              contextValue = await enveloped.contextFactory();
            } catch (error) {
              if (!(error instanceof GraphQLError)) throw error;
              const status = (error.extensions.http as { status?: number } | undefined)?.status ?? 400;
              return refuse(status, [error]);
            }
            const args: ExecutionArgs = {
              schema: enveloped.schema,
              document,
              contextValue,
              variableValues: params.variables,
              operationName: params.operationName,
            };
            const result: AsyncIterable<ExecutionResult> | ExecutionResult = await (operation ===
            'subscription'
              ? enveloped.subscribe(args)
              : enveloped.execute(args));
            if (Symbol.asyncIterator in result) return capUpdates(result, options.maxUpdateBytes);
            if (result.errors?.some(hasHttpStatus)) return answerAsYoga(result, yoga.fetchAPI);
            // graphql-sse recognises a result only by its `data` key.
            return { ...result, data: result.data ?? null };
          },
        },
        yoga.fetchAPI,
      );
    },
    onRequest({ request, endResponse, serverContext }) {
      if (!handler || !fetchAPI || new URL(request.url).pathname !== endpoint) return;
      const serve = handler;
      const api = fetchAPI;
      return (async () => {
        // graphql-sse reads the whole body as text: read it here instead, never more than the cap.
        let limited = request;
        if (request.body) {
          const body = await readFetchBody(request, options.maxBodyBytes);
          if (body === null) {
            const refusal = bodyTooLargeResponse();
            endResponse(new api.Response(refusal.body, refusal));
            return;
          }
          limited = new api.Request(request.url, {
            method: request.method,
            headers: request.headers,
            body,
            signal: request.signal,
          });
        }
        serverContexts.set(limited, serverContext);
        endResponse(await serve(limited));
      })();
    },
  };
}

const hasHttpStatus = (error: GraphQLError) =>
  Boolean((error.extensions.http as { status?: number } | undefined)?.status);

/** An error as a client sees it: the `http` extension tells this server what status to answer, not the client. */
function withoutInternals(error: GraphQLError) {
  const { http: _http, ...extensions } = error.extensions;
  return { ...error.toJSON(), ...(Object.keys(extensions).length ? { extensions } : {}) };
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  404: 'Not Found',
  429: 'Too Many Requests',
};
