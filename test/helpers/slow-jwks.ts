import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';

export interface SlowJwks {
  /** The JWKS URL to give the gateway as AUTH_JWKS_URL. */
  url: string;
  /** Resolves when the gateway has asked for the key set (and is waiting for it). */
  requested: Promise<void>;
  /** Answers every held request, and every later one at once. */
  release(): void;
  /** A token for `userId` signed with the key this server publishes. */
  sign(userId: string): Promise<string>;
  close(): Promise<void>;
}

/**
 * An identity provider whose key set answers only when the test says so: a token check that takes as long
 * as the test needs, the way a slow provider makes it, with no change to the gateway.
 */
export async function startSlowJwks(): Promise<SlowJwks> {
  const { publicKey, privateKey } = await generateKeyPair('RS256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'test-key', alg: 'RS256', use: 'sig' };
  const body = JSON.stringify({ keys: [jwk] });
  const held: ServerResponse[] = [];
  let released = false;
  let onRequested!: () => void;
  const requested = new Promise<void>((resolve) => {
    onRequested = resolve;
  });
  const answer = (res: ServerResponse) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(body);
  };
  const server = createServer((_req, res) => {
    onRequested();
    if (released) answer(res);
    else held.push(res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/.well-known/jwks.json`,
    requested,
    release() {
      released = true;
      for (const res of held.splice(0)) answer(res);
    },
    sign: (userId) =>
      new SignJWT({})
        .setProtectedHeader({ alg: 'RS256', kid: 'test-key' })
        .setSubject(userId)
        .setIssuedAt()
        .setExpirationTime('1h')
        .sign(privateKey),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
