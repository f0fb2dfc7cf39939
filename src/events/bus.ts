import { EventEmitter } from 'node:events';

/**
 * The bus only says "task X of user U reached version N". The database row stays the truth: a subscriber
 * re-reads it, so a signal can be small, late or repeated without harm.
 */
export interface TaskSignal {
  taskId: string;
  userId: string;
  version: number;
  /** The publishing span as a W3C traceparent, when tracing is on: each delivery is traced as its child. */
  trace?: string;
}

export interface EventBus {
  /** Called after the change has committed. */
  publish(signal: TaskSignal): Promise<void>;
  /** Every signal, from this instance and from others. */
  onSignal(listener: (signal: TaskSignal) => void): void;
  /** Signals may have been lost (the listening connection dropped): every subscriber should re-read. */
  onResync(listener: () => void): void;
  /** Whether signals are being heard right now (for /readyz). */
  healthy(): boolean;
  close(): Promise<void>;
}

/** A W3C traceparent is 55 characters; anything much longer on our channel is not one. */
const MAX_TRACE_PARENT = 128;

export function parseSignal(payload: string): TaskSignal | null {
  try {
    const value = JSON.parse(payload) as Partial<TaskSignal>;
    if (
      typeof value.taskId === 'string' &&
      typeof value.userId === 'string' &&
      typeof value.version === 'number'
    ) {
      const trace =
        typeof value.trace === 'string' && value.trace.length <= MAX_TRACE_PARENT ? value.trace : undefined;
      return {
        taskId: value.taskId,
        userId: value.userId,
        version: value.version,
        ...(trace ? { trace } : {}),
      };
    }
  } catch {
    // A foreign or truncated payload on our channel: ignored, subscribers re-read on the next signal anyway.
  }
  return null;
}

/** For the embedded database, where there is only ever one instance. */
export class InProcessEventBus implements EventBus {
  private readonly emitter = new EventEmitter().setMaxListeners(0);

  async publish(signal: TaskSignal): Promise<void> {
    this.emitter.emit('signal', signal);
  }

  onSignal(listener: (signal: TaskSignal) => void): void {
    this.emitter.on('signal', listener);
  }

  onResync(listener: () => void): void {
    this.emitter.on('resync', listener);
  }

  healthy(): boolean {
    return true;
  }

  async close(): Promise<void> {
    this.emitter.removeAllListeners();
  }
}
