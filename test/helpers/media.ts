import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { UploadPart } from './gateway.js';

const fixture = (name: string) =>
  new Uint8Array(readFileSync(new URL(`../fixtures/${name}`, import.meta.url)));

/** Real media from test/fixtures (see test/fixtures/generate.ts): a PNG face and a 3-second WAV recording. */
export const fixtures = {
  face: fixture('face.png'),
  voice3s: fixture('voice-3s.wav'),
  text: fixture('not-media.txt'),
};

export const facePart = (): UploadPart => ({ bytes: fixtures.face, fileName: 'face.png', type: 'image/png' });
export const voicePart = (): UploadPart => ({
  bytes: fixtures.voice3s,
  fileName: 'voice.wav',
  type: 'audio/wav',
});

/** A real PNG that is `size` bytes long: the fixture, padded after its end. */
export function pngOfSize(size: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(size);
  bytes.set(fixtures.face);
  return bytes;
}

export interface MediaServer {
  url: string;
  /** Requests by path, in arrival order. */
  hits: string[];
  close(): Promise<void>;
}

/**
 * A plain web server of the kind users' URLs point at; it ignores Range headers (the check must cope):
 * /face.png, /voice.wav, /page.html (HTML), /big.png (a PNG over 10 MB), /moved (redirects to /face.png);
 * anything else is 404.
 */
export async function startMediaServer(): Promise<MediaServer> {
  const big = pngOfSize(11_000_000);
  const files: Record<string, { body: Uint8Array; type: string }> = {
    '/face.png': { body: fixtures.face, type: 'image/png' },
    '/voice.wav': { body: fixtures.voice3s, type: 'audio/wav' },
    '/page.html': {
      body: new TextEncoder().encode('<!doctype html><title>Not found</title>'),
      type: 'image/png',
    },
    '/big.png': { body: big, type: 'image/png' },
  };
  const hits: string[] = [];
  const server: Server = createServer((req, res) => {
    const path = req.url ?? '/';
    hits.push(path);
    if (path === '/moved') return void res.writeHead(302, { location: '/face.png' }).end();
    const file = files[path];
    if (!file) return void res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
    res.writeHead(200, { 'content-type': file.type, 'content-length': file.body.byteLength });
    res.end(file.body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    hits,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
