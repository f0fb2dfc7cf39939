import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { signToken } from '../helpers/gateway.js';
import { type ProductionGateway, startProductionGateway } from './production-gateway.js';

interface Closed {
  code: number;
  reason: string;
}

/** A raw graphql-transport-ws socket, to send what graphql-ws's own client never would. */
async function openSocket(gateway: ProductionGateway) {
  const socket = new WebSocket(gateway.wsUrl, 'graphql-transport-ws');
  const closed = new Promise<Closed>((resolve) => {
    socket.on('close', (code, reason) => resolve({ code, reason: String(reason) }));
  });
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
  });
  return { socket, closed };
}

async function initialised(gateway: ProductionGateway) {
  const opened = await openSocket(gateway);
  const ack = new Promise<void>((resolve) => {
    opened.socket.on('message', (data) => {
      if (JSON.parse(String(data)).type === 'connection_ack') resolve();
    });
  });
  opened.socket.send(
    JSON.stringify({
      type: 'connection_init',
      payload: { authorization: `Bearer ${await signToken('alice')}` },
    }),
  );
  await ack;
  return opened;
}

/**
 * seen 6. Limits proved: WS_MAX_PAYLOAD_BYTES (64 KiB) on every graphql-ws message, WS_MAX_INIT_PAYLOAD_BYTES
 * (8 KiB) on the message sent before connection_init is accepted, and WS_MAX_FRAGMENTS (16) on the fragments
 * of one unfinished message, zero-length ones included.
 */
describe('graphql-ws frame limits', () => {
  let gateway: ProductionGateway;
  beforeAll(async () => {
    gateway = await startProductionGateway();
  });
  afterAll(async () => {
    await gateway?.stop();
  });

  it('closes with 1009 a 100 KiB message sent before connection_init', async () => {
    const { socket, closed } = await openSocket(gateway);
    socket.send(JSON.stringify({ type: 'connection_init', payload: { junk: 'x'.repeat(100 * 1024) } }));
    expect((await closed).code).toBe(1009);
  });

  it('closes with 1009 a 20 KiB connection_init, below the message cap', async () => {
    const { socket, closed } = await openSocket(gateway);
    socket.send(JSON.stringify({ type: 'connection_init', payload: { junk: 'x'.repeat(20 * 1024) } }));
    expect((await closed).code).toBe(1009);
  });

  it('closes with 4400 a message that is not a JSON object, even a JSON string holding one', async () => {
    for (const text of ['{not json', '42', JSON.stringify(JSON.stringify({ type: 'ping' }))]) {
      const { socket, closed } = await initialised(gateway);
      socket.send(text);
      expect(await closed).toEqual({ code: 4400, reason: 'Invalid message received' });
    }
  });

  it('closes with 1009 a 100 KiB message from an authenticated socket', async () => {
    const { socket, closed } = await initialised(gateway);
    socket.send(
      JSON.stringify({
        id: '1',
        type: 'subscribe',
        payload: { query: `{ viewer { id } } #${'x'.repeat(100 * 1024)}` },
      }),
    );
    expect((await closed).code).toBe(1009);
  });

  it('closes with 1008 a message left unfinished over many zero-length fragments', async () => {
    const { socket, closed } = await initialised(gateway);
    for (let fragment = 0; fragment < 1_000; fragment++) socket.send('', { fin: false });
    expect((await closed).code).toBe(1008);
  });

  it('still serves a normal operation of a few KiB', async () => {
    const { socket, closed } = await initialised(gateway);
    const answer = new Promise<unknown>((resolve) => {
      socket.on('message', (data) => {
        const message = JSON.parse(String(data));
        if (message.type === 'next') resolve(message.payload);
      });
    });
    socket.send(
      JSON.stringify({
        id: '1',
        type: 'subscribe',
        payload: { query: `{ viewer { id } } #${'x'.repeat(4 * 1024)}` },
      }),
    );
    expect(await answer).toEqual({ data: { viewer: { id: 'alice' } } });
    socket.close(1000);
    expect((await closed).code).toBe(1000);
  });
});
