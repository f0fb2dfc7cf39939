import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { getCORSHeadersByRequestAndOptions, sendNodeResponse } from '@whatwg-node/server';
import { type ExecutionResult, GraphQLError, locatedError } from 'graphql';
import type { Logger } from 'pino';
import { bearerToken, type TokenVerifier, type Viewer } from '../auth/tokens.js';
import type { CorsPolicy } from './cors.js';
import { unavailableError } from './error-masking.js';
import { subscribe as subscribeExecuted } from './executed-stream.js';
import type { OperationGate, OperationParams } from './operation-gate.js';
import { exceedsBytes, OUTPUT_LIMIT_EXCEEDED, updateTooLarge } from './output-limits.js';
import { bodyTooLargeResponse, readNodeBody } from './request-body.js';
import { type HeaderEntry, setHeaderEntries } from './security-headers.js';
import { SseKeepAlive } from './sse-keep-alive.js';
import { guardUserStream, type StreamLimits, tooManyStreams } from './stream-limits.js';
import { type GatewayYoga, GRAPHQL_PATH } from './yoga.js';

export interface SseTransportOptions {
  yoga: GatewayYoga;
  gate: OperationGate;
  verifier: TokenVerifier;
  logger: Logger;
  /** The same origins as yoga's CORS. */
  cors: CorsPolicy;
  /** Each stream takes one of its user's open-stream slots and ends when its token expires. */
  limits: StreamLimits;
  /** A GraphQL request body larger than this is refused with 413, as yoga refuses it. */
  maxBodyBytes: number;
  /** An update serialised larger than this ends the stream with an error event. */
  maxUpdateBytes: number;
  /** A stream whose reader leaves more than this unread ends with an error event. */
  maxBufferedBytes: number;
  /** Every open stream gets a comment this often, as yoga's SSE does (12 s), so proxies keep it open. */
  keepAliveMs?: number;
}

/**
 * GraphQL over SSE in yoga's "distinct connections" mode (`Accept: text/event-stream` on /graphql), served on
 * node:http for a subscription that starts. yoga's own SSE path holds about 38 KB per open stream
 * (two Requests, three ReadableStreams, five sets of stream listeners, five iterator layers), five times a
 * graphql-ws subscription, and a 100 MB heap at 2,000 streams made every major collection a 100+ ms stall.
 * Here a stream is the node response, the GraphQL stream and a slot in the shared keep-alive.
 *
 * Parsing, validation and the operation limits go through the operation gate, as for graphql-ws; the
 * subscription runs on graphql-js with the gate's error masking (see websocket.ts). Parsed documents are
 * shared by every stream of the same query through the gate's document cache (a document with its tokens and
 * locations is about 5 KB, which each open stream would otherwise hold). Anything else (a query or mutation, a malformed or
 * unauthenticated request, invalid GraphQL, a subscription refused before it starts) is handed to yoga whole,
 * so its answers stay exactly yoga's.
 */
export function createSseTransport(options: SseTransportOptions) {
  const { yoga, gate, verifier, logger } = options;
  const { mask } = gate;
  const keepAlive = new SseKeepAlive(options.keepAliveMs);

  /** yoga's answer to the request, for every case this transport does not stream itself. */
  async function delegate(req: IncomingMessage, res: ServerResponse, body: Buffer | undefined) {
    const headers = new Headers();
    for (const [name, value] of Object.entries(req.headers)) {
      if (value !== undefined) headers.set(name, Array.isArray(value) ? value.join(', ') : value);
    }
    // The route is the path alone: the Host header (checked on entry, see request-target.ts) is not part of it.
    const response = await yoga.fetch(`http://localhost${req.url ?? '/'}`, {
      method: req.method,
      headers,
      ...(body ? { body: new Uint8Array(body) } : {}),
    });
    await sendNodeResponse(response, res, req, false);
  }

  /**
   * Starts streaming a subscription that has started; it goes on until it ends or the client leaves. Not an
   * async loop: one would stay suspended, with the request, the response and its closures, for as long as the
   * stream is idle (see SseResponseStream).
   */
  function stream(
    req: IncomingMessage,
    res: ServerResponse,
    iterator: AsyncIterableIterator<ExecutionResult>,
    left: ClientLeft,
    headers: readonly HeaderEntry[],
  ): void {
    const request = requestLike(req);
    const cors = getCORSHeadersByRequestAndOptions(request, options.cors.optionsFor(request)) ?? {};
    // All at once: headers set one by one stay in the response (node's outgoing-headers map, a [name, value]
    // array per header, about 1.8 KB for the gateway's 16) for as long as the stream is open.
    const head = Object.fromEntries(headers) as OutgoingHttpHeaders;
    res.writeHead(
      200,
      Object.assign(head, {
        'Content-Type': 'text/event-stream',
        Connection: 'keep-alive',
        'Cache-Control': 'no-cache',
        'Content-Encoding': 'none',
        ...cors,
      }),
    );
    res.write(':\n\n');
    flattenHeaderBlock(res);
    keepAlive.add(res);
    left.onGone(() => void iterator.return?.());
    new SseResponseStream(res, iterator, left, streamOptions).pull();
  }

  const streamOptions: SseResponseStreamOptions = {
    mask,
    logger,
    maxBufferedBytes: options.maxBufferedBytes,
    maxUpdateBytes: options.maxUpdateBytes,
  };

  return {
    /** True when the request is one this transport answers (it then owns the response). */
    handles(req: IncomingMessage): boolean {
      if (req.method !== 'GET' && req.method !== 'POST') return false;
      const path = (req.url ?? '').split('?', 1)[0];
      if (path !== GRAPHQL_PATH) return false;
      // The first media type the client asks for: a client that prefers JSON gets yoga's negotiation.
      const accept = (req.headers.accept ?? '').split(',', 1)[0]?.trim() ?? '';
      return accept.startsWith('text/event-stream');
    },

    /**
     * `headers` are those every answer carries (the request id, the security headers): written with the
     * stream's own when it streams, set on the response before any other answer.
     */
    async serve(req: IncomingMessage, res: ServerResponse, headers: readonly HeaderEntry[]): Promise<void> {
      const setHeaders = () => setHeaderEntries(res, headers);
      try {
        const body = req.method === 'POST' ? await readNodeBody(req, options.maxBodyBytes) : undefined;
        if (body === null) {
          setHeaders();
          const refusal = bodyTooLargeResponse();
          res.writeHead(refusal.status, refusal.headers);
          res.end(refusal.body);
          return;
        }
        // Listened for before the subscription starts: a client may leave while its token is checked, and
        // 'close' is emitted once, so a listener added later would never hear it and the stream would leak.
        const left = clientLeft(res);
        const started = await start(req, body);
        if (started === TOO_MANY_STREAMS) {
          setHeaders();
          res.writeHead(429, { 'Content-Type': 'application/json' });
          const error = tooManyStreams(options.limits.openStreams.maxPerUser);
          res.end(
            JSON.stringify({
              errors: [{ message: error.message, extensions: { code: 'TOO_MANY_STREAMS' } }],
            }),
          );
          return;
        }
        if (!started) {
          setHeaders();
          await delegate(req, res, body);
          return;
        }
        if ('unavailable' in started) {
          // Answered here: yoga would run the subscription again and wait out a second database deadline.
          setHeaders();
          res.writeHead(503, { 'Content-Type': 'application/json; charset=utf-8' });
          res.end(JSON.stringify({ errors: [mask(started.unavailable)] }));
          return;
        }
        if (left.gone) {
          await started.return?.();
          return;
        }
        stream(req, res, started, left, headers);
      } catch (error) {
        logger.error({ err: error }, 'SSE request failed');
        if (!res.headersSent) {
          setHeaders();
          res.writeHead(500, { 'Content-Type': 'application/json' });
        }
        res.end();
      }
    },

    close() {
      keepAlive.close();
    },
  };

  /**
   * The subscription's stream once it has started, or undefined when yoga should answer instead: anything
   * but a subscription, a request yoga would refuse, and a subscription that ends before it starts (its one
   * error, NOT_FOUND say, with yoga's status and codes; subscribing again there has no side effects).
   */
  async function start(req: IncomingMessage, body: Buffer | undefined) {
    const params = operationParams(req, body);
    if (!params) return undefined;
    let viewer: Viewer | undefined;
    try {
      const token = bearerToken(req.headers.authorization);
      if (token) viewer = await verifier.verify(token);
    } catch {
      return undefined;
    }
    const admission = gate.admit(params, { viewer, transport: 'sse' });
    if (!admission.admitted || admission.operation !== 'subscription') return undefined;
    const { document } = admission;
    const { schema, contextFactory } = admission.envelope;
    // Copied into a plain object, as a graphql-ws socket's (see socket-context.ts): the envelope's context comes
    // out with a hidden class of its own, about 360 bytes of shape kept by every open stream.
    const contextValue = Object.assign({}, await contextFactory());
    const result = await gate.observe(
      { transport: 'sse', document, operationName: params.operationName },
      async () =>
        subscribeExecuted({
          schema,
          document,
          contextValue,
          variableValues: params.variables,
          operationName: params.operationName,
        }),
    );
    if (!(Symbol.asyncIterator in result)) {
      const unavailable = unavailableError(result);
      return unavailable ? { unavailable } : undefined;
    }
    if (!viewer) return undefined;
    const guarded = guardUserStream(options.limits, viewer, () => result);
    if (guarded) return guarded;
    await result.return?.();
    return TOO_MANY_STREAMS;
  }
}

/** How long a reader past MAX_BUFFERED_BYTES has to take its backlog after the end, before it is cut. */
const STALLED_READER_GRACE_MS = 5_000;

interface SseResponseStreamOptions {
  mask: (error: GraphQLError) => GraphQLError;
  logger: Logger;
  maxBufferedBytes: number;
  maxUpdateBytes: number;
}

/**
 * One open SSE response: asks its subscription for the next result once the last one is written, as one small
 * object, so an idle stream holds no suspended function (about 1 KB of each open stream).
 */
class SseResponseStream {
  /** Ended over MAX_BUFFERED_BYTES: the reader gets a moment to take its backlog, then the socket goes. */
  private stalled = false;

  constructor(
    private readonly res: ServerResponse,
    private readonly iterator: AsyncIterableIterator<ExecutionResult>,
    private readonly left: ClientLeft,
    private readonly options: SseResponseStreamOptions,
  ) {}

  pull(): void {
    this.iterator
      .next()
      .then(
        (next) => this.forward(next),
        (error: unknown) => this.fail(error),
      )
      .catch((error: unknown) => {
        this.options.logger.error({ err: error }, 'SSE request failed');
        this.res.destroy();
      });
  }

  private forward(next: IteratorResult<ExecutionResult>): void {
    if (this.left.gone) return;
    if (next.done) {
      this.finish();
      return;
    }
    let text: string;
    try {
      // Not a wait for 'drain': a reader that stops reading would hold the stream, its slot and an update
      // for as long as it stays open. Its backlog grows by one update per change until past the cap.
      if (this.res.writableLength > this.options.maxBufferedBytes) {
        this.stalled = true;
        this.endOverCap(
          new GraphQLError('Reader too slow: over MAX_BUFFERED_BYTES unread', {
            extensions: { code: OUTPUT_LIMIT_EXCEEDED },
          }),
        );
        return;
      }
      text = frame(next.value, this.options.mask);
    } catch (error) {
      this.fail(error);
      return;
    }
    if (exceedsBytes(text, this.options.maxUpdateBytes)) {
      this.endOverCap(updateTooLarge());
      return;
    }
    this.res.write(text);
    this.pull();
  }

  /** The stream itself failed (the database, say): one masked error, then the end, as yoga does. */
  private fail(error: unknown): void {
    if (this.left.gone) return;
    this.res.write(frame({ errors: [locatedError(error, undefined)] }, this.options.mask));
    this.finish();
  }

  /** Past either output cap the stream ends with one error naming it, instead of holding the bytes. */
  private endOverCap(error: GraphQLError): void {
    void this.iterator.return?.();
    this.res.write(frame({ errors: [error] }, this.options.mask));
    this.finish();
  }

  private finish(): void {
    if (this.left.gone) return;
    const { res } = this;
    res.end('event: complete\ndata:\n\n');
    // A reader that does not read would keep the backlog in this process: a moment to take it, then it goes.
    if (this.stalled) {
      const timer = setTimeout(() => res.destroy(), STALLED_READER_GRACE_MS);
      timer.unref();
      res.once('close', () => clearTimeout(timer));
    }
  }
}

/**
 * node keeps a response's header block (`_header`) for as long as the response lives, in the shape it was
 * built: a rope of about 70 small strings for the gateway's 16 headers (security headers, CORS, request id),
 * kept by every open stream. Reading a character of it makes V8 flatten the rope in place into one string: an
 * open stream's heap went from 6,768 to 5,684-5,769 B (`npm run bench -- --only sse`). `_header` is node's
 * own field, so anything but a string there is left alone; the character read is stored, so that the read is
 * not optimised away.
 */
function flattenHeaderBlock(res: ServerResponse): void {
  const header = (res as unknown as { _header?: unknown })._header;
  if (typeof header === 'string') _headerBlockProbe = header.charCodeAt(0);
}

/** Where the character read lands: a store V8 keeps, where an unused read could be dropped. */
let _headerBlockProbe = 0;

/** One result as an SSE `next` event, its errors masked and serialised as yoga does. */
function frame(value: ExecutionResult, mask: (error: GraphQLError) => GraphQLError): string {
  const shown = value.errors ? { ...value, errors: value.errors.map(mask) } : value;
  return `event: next\ndata: ${JSON.stringify(wire(shown))}\n\n`;
}

/** start()'s answer when the user's open-stream slots are all taken. */
const TOO_MANY_STREAMS = Symbol('too many streams');

function operationParams(req: IncomingMessage, body: Buffer | undefined): OperationParams | undefined {
  try {
    let raw: Record<string, unknown>;
    if (req.method === 'GET') {
      const search = new URL(req.url ?? '/', 'http://localhost').searchParams;
      const variables = search.get('variables');
      const extensions = search.get('extensions');
      raw = {
        query: search.get('query'),
        operationName: search.get('operationName') ?? undefined,
        variables: variables ? JSON.parse(variables) : undefined,
        extensions: extensions ? JSON.parse(extensions) : undefined,
      };
    } else {
      if (!(req.headers['content-type'] ?? '').startsWith('application/json')) return undefined;
      raw = JSON.parse(body?.toString('utf8') ?? '');
    }
    const { query, variables, operationName, extensions } = raw;
    if (typeof query !== 'string') return undefined;
    if (variables != null && (typeof variables !== 'object' || Array.isArray(variables))) return undefined;
    if (operationName != null && typeof operationName !== 'string') return undefined;
    return {
      query,
      ...(variables ? { variables: variables as Record<string, unknown> } : {}),
      ...(operationName ? { operationName } : {}),
      ...(extensions && typeof extensions === 'object'
        ? { extensions: extensions as Record<string, unknown> }
        : {}),
    };
  } catch {
    return undefined;
  }
}

/** As yoga serialises a result: without the `http` and `unexpected` extensions, which are for the server. */
function wire(result: ExecutionResult) {
  if (!result.errors?.length) return result.errors ? { ...result, errors: undefined } : result;
  return {
    ...result,
    errors: result.errors.map((error) => {
      const json = error.toJSON();
      const { http: _http, unexpected: _unexpected, ...extensions } = json.extensions ?? {};
      return { ...json, extensions: Object.keys(extensions).length > 0 ? extensions : undefined };
    }),
  };
}

/** Only what the CORS helper reads of a request. */
function requestLike(req: IncomingMessage): Request {
  return {
    method: req.method,
    headers: { get: (name: string) => req.headers[name.toLowerCase()] ?? null },
  } as unknown as Request;
}

/** Whether the client has gone, known from the moment the request arrived. */
interface ClientLeft {
  readonly gone: boolean;
  /** Runs `listener` once the client goes, or at once if it already has. */
  onGone(listener: () => void): void;
}

function clientLeft(res: ServerResponse): ClientLeft {
  const left = new ResponseLeft();
  res.once('close', () => left.leave());
  return left;
}

/**
 * One listener on the response for both the flag and what runs when the client goes: a listener and a once
 * wrapper more per open stream would be kept for as long as it stays open.
 */
class ResponseLeft implements ClientLeft {
  gone = false;
  private listener: (() => void) | undefined;

  leave(): void {
    this.gone = true;
    const listener = this.listener;
    this.listener = undefined;
    listener?.();
  }

  onGone(listener: () => void): void {
    if (this.gone) {
      listener();
      return;
    }
    const earlier = this.listener;
    this.listener = earlier
      ? () => {
          earlier();
          listener();
        }
      : listener;
  }
}
