import { describe, expect, it } from 'vitest';
import { type SubscriptionContextHolder, sharedSubscriptionContext } from '../../src/http/socket-context.js';

describe('a socket’s shared subscription context', () => {
  it('is built once for every subscription of the socket, even when they arrive together', async () => {
    const socket: SubscriptionContextHolder = {};
    let builds = 0;
    const build = async () => {
      builds++;
      return { viewer: 'alice' };
    };
    const [first, second] = await Promise.all([
      sharedSubscriptionContext(socket, build),
      sharedSubscriptionContext(socket, build),
    ]);
    const third = await sharedSubscriptionContext(socket, build);
    expect(builds).toBe(1);
    expect(second).toBe(first);
    expect(third).toBe(first);
  });

  it('is built again by the next subscription after a build failed', async () => {
    const socket: SubscriptionContextHolder = {};
    const failing = sharedSubscriptionContext(socket, () => Promise.reject(new Error('no database')));
    await expect(failing).rejects.toThrow('no database');
    const context = await sharedSubscriptionContext(socket, async () => ({ viewer: 'alice' }));
    expect(context).toEqual({ viewer: 'alice' });
  });

  it('is not shared between sockets', async () => {
    const build = async () => ({});
    const one = await sharedSubscriptionContext({}, build);
    const other = await sharedSubscriptionContext({}, build);
    expect(other).not.toBe(one);
  });
});
