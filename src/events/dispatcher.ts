import type { EventBus, TaskSignal } from './bus.js';

type Listener = (signal: TaskSignal) => void;

/**
 * Routes each signal to the subscribers of that task and of that user only, so one signal costs a map
 * lookup, not a walk over every open subscription on the instance.
 */
export class SignalDispatcher {
  private readonly byTask = new Map<string, Set<Listener>>();
  private readonly byUser = new Map<string, Set<Listener>>();
  private readonly resyncListeners = new Set<() => void>();

  constructor(bus: EventBus) {
    bus.onSignal((signal) => {
      for (const listener of this.byTask.get(signal.taskId) ?? []) listener(signal);
      for (const listener of this.byUser.get(signal.userId) ?? []) listener(signal);
    });
    bus.onResync(() => {
      for (const listener of this.resyncListeners) listener();
    });
  }

  watchTask(taskId: string, listener: Listener, onResync: () => void): () => void {
    return this.watch(this.byTask, taskId, listener, onResync);
  }

  watchUser(userId: string, listener: Listener, onResync: () => void): () => void {
    return this.watch(this.byUser, userId, listener, onResync);
  }

  private watch(index: Map<string, Set<Listener>>, key: string, listener: Listener, onResync: () => void) {
    let listeners = index.get(key);
    if (!listeners) {
      listeners = new Set();
      index.set(key, listeners);
    }
    listeners.add(listener);
    this.resyncListeners.add(onResync);
    return () => {
      listeners.delete(listener);
      if (listeners.size === 0) index.delete(key);
      this.resyncListeners.delete(onResync);
    };
  }
}
