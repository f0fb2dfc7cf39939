import { type ExecutionResult, GraphQLError } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { Viewer } from '../auth/tokens.js';
import { type GraphQLContext, unauthenticated } from '../graphql/context.js';
import type { DeadlineClock } from './deadline-clock.js';
import { GuardedStream } from './guarded-stream.js';
import type { OpenStreams } from './open-streams.js';

export interface StreamLimits {
  openStreams: OpenStreams;
  clock: DeadlineClock;
}

export function tooManyStreams(max: number): GraphQLError {
  return new GraphQLError(`At most ${max} open streams per user (MAX_SOCKETS_PER_USER)`, {
    extensions: { code: 'TOO_MANY_STREAMS', http: { status: 429 } },
  });
}

/**
 * An HTTP stream as the user's: it takes one of their open-stream slots for as long as it lives, and it ends
 * with one UNAUTHENTICATED error when the token that opened it expires. Undefined when every slot is taken.
 */
export function guardUserStream(
  limits: StreamLimits,
  viewer: Viewer,
  open: () => AsyncIterator<ExecutionResult>,
): GuardedStream<ExecutionResult> | undefined {
  if (!limits.openStreams.tryOpen(viewer.id)) return undefined;
  let source: AsyncIterator<ExecutionResult>;
  try {
    source = open();
  } catch (error) {
    limits.openStreams.close(viewer.id);
    throw error;
  }
  return new GuardedStream(source, {
    clock: limits.clock,
    endsAtMs: viewer.expiresAt * 1000,
    expiredValue: () => ({ errors: [unauthenticated('Token expired')] }),
    onEnd: () => limits.openStreams.close(viewer.id),
  });
}

/**
 * The same for subscriptions that run through yoga's envelop: yoga's own SSE and graphql-sse (graphql-ws and
 * the lean SSE path subscribe on graphql-js directly and count for themselves).
 */
export function useStreamLimits(limits: StreamLimits): Plugin {
  return {
    onSubscribe({ args, subscribeFn, setSubscribeFn, setResultAndStopExecution }) {
      const viewer = (args.contextValue as Partial<GraphQLContext>).viewer;
      if (!viewer) return;
      if (limits.openStreams.openFor(viewer.id) >= limits.openStreams.maxPerUser) {
        setResultAndStopExecution({ errors: [tooManyStreams(limits.openStreams.maxPerUser)] });
        return;
      }
      setSubscribeFn(async (subscribeArgs) => {
        const result = await subscribeFn(subscribeArgs);
        if (!(Symbol.asyncIterator in result)) return result;
        const guarded = guardUserStream(limits, viewer, () => result[Symbol.asyncIterator]());
        if (guarded) return guarded;
        await result.return?.();
        return { errors: [tooManyStreams(limits.openStreams.maxPerUser)] };
      });
    },
  };
}
