import type { EventBus, TaskSignal } from './bus.js';

/** What a live stream registers: told of each signal for its key, and when signals may have been lost. */
export interface SignalWatcher {
  onSignal(signal: TaskSignal): void;
  onResync(): void;
}

/**
 * Routes each signal to the subscribers of that task and of that user only, so one signal costs a map
 * lookup, not a walk over every open subscription on the instance. Watchers are objects, not closures: an
 * idle subscription should cost a set entry here, nothing more.
 */
export class SignalDispatcher {
  private readonly byTask = new Map<string, Watchers>();
  private readonly byUser = new Map<string, Watchers>();
  private readonly everyone = new Set<SignalWatcher>();

  constructor(bus: EventBus) {
    bus.onSignal((signal) => {
      tell(this.byTask.get(signal.taskId), signal);
      tell(this.byUser.get(signal.userId), signal);
    });
    bus.onResync(() => {
      for (const watcher of this.everyone) watcher.onResync();
    });
  }

  watchTask(taskId: string, watcher: SignalWatcher): void {
    this.watch(this.byTask, taskId, watcher);
  }

  unwatchTask(taskId: string, watcher: SignalWatcher): void {
    this.unwatch(this.byTask, taskId, watcher);
  }

  watchUser(userId: string, watcher: SignalWatcher): void {
    this.watch(this.byUser, userId, watcher);
  }

  unwatchUser(userId: string, watcher: SignalWatcher): void {
    this.unwatch(this.byUser, userId, watcher);
  }

  private watch(index: Map<string, Watchers>, key: string, watcher: SignalWatcher): void {
    const watchers = index.get(key);
    if (!watchers) index.set(key, watcher);
    else if (watchers instanceof Set) watchers.add(watcher);
    else index.set(key, new Set([watchers, watcher]));
    this.everyone.add(watcher);
  }

  private unwatch(index: Map<string, Watchers>, key: string, watcher: SignalWatcher): void {
    const watchers = index.get(key);
    if (watchers === watcher) index.delete(key);
    else if (watchers instanceof Set) {
      watchers.delete(watcher);
      if (watchers.size === 0) index.delete(key);
    }
    this.everyone.delete(watcher);
  }
}

/** Nearly every task and user has one watcher: a Set only when there are more, as a set costs ~100 bytes. */
type Watchers = SignalWatcher | Set<SignalWatcher>;

function tell(watchers: Watchers | undefined, signal: TaskSignal): void {
  if (watchers instanceof Set) for (const watcher of watchers) watcher.onSignal(signal);
  else watchers?.onSignal(signal);
}
