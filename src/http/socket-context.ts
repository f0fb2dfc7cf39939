/** Where a socket keeps the context its subscriptions share (graphql-ws's per-socket `extra`). */
export interface SubscriptionContextHolder {
  subscriptionContext?: Promise<Record<string, unknown>>;
}

/**
 * The GraphQL context every subscription of one socket executes with, built by the first of them. A socket
 * has one viewer for its whole life (it closes when the token expires), and a subscription's context is only
 * read by resolvers, which keep nothing in it: a context per subscription, about 0.6 KB with its loaders,
 * lived as long as each idle subscription (`npm run bench -- --only idle-subscribers --profile`). Kept as the
 * promise, so subscriptions that arrive together still build it once; a build that fails is not kept, and
 * the next subscription builds it again.
 */
export function sharedSubscriptionContext(
  holder: SubscriptionContextHolder,
  build: () => Record<string, unknown> | Promise<Record<string, unknown>>,
): Promise<Record<string, unknown>> {
  const existing = holder.subscriptionContext;
  if (existing) return existing;
  // Copied into a plain object: the envelope's context comes out with a hidden class of its own (about 360
  // bytes of shape per context), the copy shares one with every other socket's.
  const built = Promise.resolve(build()).then((context) => Object.assign({}, context));
  holder.subscriptionContext = built;
  built.catch(() => {
    if (holder.subscriptionContext === built) holder.subscriptionContext = undefined;
  });
  return built;
}
