import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createTaskOk, signToken } from '../helpers/gateway.js';
import { type ProductionGateway, startProductionGateway } from '../security/production-gateway.js';

interface Message {
  id?: string;
  type: string;
  payload?: unknown;
}

const USER_UPDATES = 'subscription { avatarTaskUpdated { id state version } }';
const wait = { timeout: 5_000, interval: 20 };

/**
 * A raw graphql-transport-ws socket: every message the gateway sends, and how it closed. graphql-ws's own
 * client hides the protocol (it never reuses an id, never sends a second subscribe with a running id).
 */
class RawSocket {
  readonly received: Message[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private constructor(readonly socket: WebSocket) {
    socket.on('message', (data) => this.received.push(JSON.parse(String(data)) as Message));
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.on('close', (code, reason) => resolve({ code, reason: String(reason) })),
    );
  }

  static async open(gateway: ProductionGateway, user?: string): Promise<RawSocket> {
    const socket = new WebSocket(gateway.wsUrl, 'graphql-transport-ws');
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('error', reject);
    });
    const raw = new RawSocket(socket);
    if (user) {
      raw.send({ type: 'connection_init', payload: { authorization: `Bearer ${await signToken(user)}` } });
      await raw.next((message) => message.type === 'connection_ack');
    }
    return raw;
  }

  send(message: unknown): void {
    this.socket.send(JSON.stringify(message));
  }

  subscribe(id: string, query: string): void {
    this.send({ id, type: 'subscribe', payload: { query } });
  }

  of(id: string): Message[] {
    return this.received.filter((message) => message.id === id);
  }

  async next(match: (message: Message) => boolean): Promise<Message> {
    let found: Message | undefined;
    await expect.poll(() => (found = this.received.find(match)), wait).toBeDefined();
    return found as Message;
  }

  close(): void {
    this.socket.terminate();
  }
}

/**
 * graphql-transport-ws as the gateway speaks it. It runs a subscribe message itself (ws-operations.ts), not
 * through graphql-ws's server, so each rule of the protocol graphql-ws's server kept is proved here: the
 * close codes, the id bookkeeping, `complete` in both directions, queries and errors over the socket.
 */
describe('graphql-transport-ws protocol', () => {
  let gateway: ProductionGateway;
  const sockets: RawSocket[] = [];
  const open = async (user?: string) => {
    const socket = await RawSocket.open(gateway, user);
    sockets.push(socket);
    return socket;
  };

  beforeAll(async () => {
    gateway = await startProductionGateway();
  });
  afterEach(() => {
    for (const socket of sockets.splice(0)) socket.close();
  });
  afterAll(async () => {
    await gateway?.stop();
  });

  it('closes with 4401 a subscribe sent before connection_ack', async () => {
    const socket = await open();
    socket.subscribe('1', USER_UPDATES);
    expect(await socket.closed).toEqual({ code: 4401, reason: 'Unauthorized' });
  });

  it('closes with 4400 a subscribe without an id or a query', async () => {
    const socket = await open('protocol-invalid');
    socket.send({ type: 'subscribe', payload: { query: USER_UPDATES } });
    expect(await socket.closed).toEqual({ code: 4400, reason: 'Invalid message received' });
  });

  it('closes with 4409 a second subscribe with the id of a running one', async () => {
    const socket = await open('protocol-duplicate');
    socket.subscribe('same', USER_UPDATES);
    socket.subscribe('same', USER_UPDATES);
    expect(await socket.closed).toEqual({ code: 4409, reason: 'Subscriber for same already exists' });
  });

  it('answers a query with one next and a complete, and frees its id', async () => {
    const socket = await open('protocol-query');
    socket.subscribe('q', '{ avatarTasks(first: 1) { edges { node { id } } } }');
    await socket.next((message) => message.id === 'q' && message.type === 'complete');
    expect(socket.of('q')).toEqual([
      { id: 'q', type: 'next', payload: { data: { avatarTasks: { edges: [] } } } },
      { id: 'q', type: 'complete' },
    ]);
    // The id is free again once complete was sent.
    socket.subscribe('q', '{ avatarTasks(first: 1) { edges { node { id } } } }');
    await expect.poll(() => socket.of('q').length, wait).toBe(4);
  });

  it('answers an operation that fails validation with one error message and no complete, and frees its id', async () => {
    const socket = await open('protocol-invalid-field');
    socket.subscribe('bad', 'subscription { avatarTaskUpdated { noSuchField } }');
    const error = await socket.next((message) => message.id === 'bad');
    expect(error.type).toBe('error');
    expect(JSON.stringify(error.payload)).toMatch(/noSuchField/);
    socket.subscribe('bad', USER_UPDATES);
    await createTaskOk(gateway, undefined, 'protocol-invalid-field');
    await socket.next((message) => message.id === 'bad' && message.type === 'next');
    expect(socket.of('bad').filter((message) => message.type === 'complete')).toEqual([]);
  });

  it('stops a subscription the client completes: nothing more is sent for it, and its id is free again', async () => {
    const user = 'protocol-complete';
    const socket = await open(user);
    socket.subscribe('live', USER_UPDATES);
    socket.subscribe('other', USER_UPDATES);
    await createTaskOk(gateway, undefined, user);
    await socket.next((message) => message.id === 'live' && message.type === 'next');
    socket.send({ id: 'live', type: 'complete' });
    // A socket's messages arrive in order: once `other` hears of a task created after the complete, `live`
    // would have too.
    const before = socket.of('live').length;
    const second = await createTaskOk(gateway, undefined, user);
    await socket.next(
      (message) => message.id === 'other' && JSON.stringify(message.payload).includes(second.id),
    );
    expect(socket.of('live').length).toBe(before);
    expect(socket.of('live').some((message) => message.type === 'complete')).toBe(false);
    // Not 4409: the completed subscription was let go.
    socket.subscribe('live', USER_UPDATES);
    const third = await createTaskOk(gateway, undefined, user);
    await socket.next(
      (message) => message.id === 'live' && JSON.stringify(message.payload).includes(third.id),
    );
  });

  it('sends complete when a subscription ends by itself (a task reached its final state)', async () => {
    const user = 'protocol-final';
    const socket = await open(user);
    const task = await createTaskOk(gateway, undefined, user);
    socket.subscribe('task', `subscription { avatarTaskUpdated(id: "${task.id}") { state } }`);
    await socket.next((message) => message.id === 'task' && message.type === 'complete');
    const states = socket
      .of('task')
      .filter((message) => message.type === 'next')
      .map((message) => (message.payload as { data: { avatarTaskUpdated: { state: string } } }).data);
    expect(states.at(-1)).toEqual({ avatarTaskUpdated: { state: 'SUCCEEDED' } });
  });
});
