import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { AuthenticationError, createTokenVerifier } from '../../src/auth/tokens.js';

const SECRET = 'a-test-secret-of-at-least-32-characters!';

const sign = (userId: string, expiresAt: number, secret = SECRET) =>
  new SignJWT({})
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(userId)
    .setExpirationTime(expiresAt)
    .sign(new TextEncoder().encode(secret));

const verifier = async () =>
  createTokenVerifier(
    { mode: 'secret', secret: SECRET },
    await mkdtemp(path.join(tmpdir(), 'avatar-gateway-tokens-')),
  );

/** Verified tokens are remembered for speed; these are the limits of that memory. */
describe('token verification', () => {
  it('refuses a token once it has expired, even though it verified a moment before', async () => {
    const { verify } = await verifier();
    const expiresAt = Math.floor(Date.now() / 1000) + 2;
    const token = await sign('alice', expiresAt);
    expect(await verify(token)).toEqual({ id: 'alice', expiresAt, operator: false });
    expect(await verify(token)).toEqual({ id: 'alice', expiresAt, operator: false });
    await new Promise((resolve) => setTimeout(resolve, expiresAt * 1000 - Date.now() + 50));
    await expect(verify(token)).rejects.toThrow(AuthenticationError);
  });

  it('refuses a forged token every time, whatever was verified before', async () => {
    const { verify } = await verifier();
    const expiresAt = Math.floor(Date.now() / 1000) + 3600;
    expect((await verify(await sign('alice', expiresAt))).id).toBe('alice');
    const forged = await sign('alice', expiresAt, 'another-secret-of-at-least-32-characters');
    await expect(verify(forged)).rejects.toThrow(/signature/);
    await expect(verify(forged)).rejects.toThrow(/signature/);
  });
});

/** What an HS256 token must carry, beyond its signature, to be taken. */
describe('HS256 token checks', () => {
  const inAnHour = () => Math.floor(Date.now() / 1000) + 3600;
  const secretKey = new TextEncoder().encode(SECRET);
  const unsigned = (header: object, payload: object) =>
    `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.`;

  it('takes only the configured issuer and audience', async () => {
    const { verify } = await createTokenVerifier(
      { mode: 'secret', secret: SECRET, issuer: 'https://auth.example', audience: 'avatar-gateway' },
      await mkdtemp(path.join(tmpdir(), 'avatar-gateway-tokens-')),
    );
    const token = (issuer: string, audience: string) =>
      new SignJWT({})
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('alice')
        .setIssuer(issuer)
        .setAudience(audience)
        .setExpirationTime(inAnHour())
        .sign(secretKey);
    expect((await verify(await token('https://auth.example', 'avatar-gateway'))).id).toBe('alice');
    await expect(verify(await token('https://elsewhere.example', 'avatar-gateway'))).rejects.toThrow(/iss/);
    await expect(verify(await token('https://auth.example', 'another-app'))).rejects.toThrow(/aud/);
  });

  it('refuses other algorithms, unsigned tokens and tokens not valid yet', async () => {
    // HS512 wants a key of 64 bytes or more: the verifier holds the very key the token is signed with, so
    // only its algorithm can refuse it.
    const longSecret = SECRET.repeat(2);
    const { verify: verifyLong } = await createTokenVerifier(
      { mode: 'secret', secret: longSecret },
      await mkdtemp(path.join(tmpdir(), 'avatar-gateway-tokens-')),
    );
    const signWithLongSecret = (alg: string) =>
      new SignJWT({})
        .setProtectedHeader({ alg })
        .setSubject('alice')
        .setExpirationTime(inAnHour())
        .sign(new TextEncoder().encode(longSecret));
    expect((await verifyLong(await signWithLongSecret('HS256'))).id).toBe('alice');
    await expect(verifyLong(await signWithLongSecret('HS512'))).rejects.toThrow(/algorithm/);
    const { verify } = await verifier();
    await expect(verify(unsigned({ alg: 'none' }, { sub: 'alice', exp: inAnHour() }))).rejects.toThrow(
      AuthenticationError,
    );
    const early = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('alice')
      .setNotBefore(inAnHour() - 60)
      .setExpirationTime(inAnHour())
      .sign(secretKey);
    await expect(verify(early)).rejects.toThrow(AuthenticationError);
    await expect(verify('not-a-token')).rejects.toThrow(AuthenticationError);
  });

  it('refuses a token whose exp is not a number', async () => {
    const { verify } = await verifier();
    const token = await new SignJWT({ exp: 'tomorrow' } as never)
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('alice')
      .sign(secretKey);
    await expect(verify(token)).rejects.toThrow(AuthenticationError);
  });
});

describe('the operator role', () => {
  it.each([
    [{ roles: ['operator'] }, true],
    [{ roles: 'admin operator' }, true],
    [{ roles: ['operators'] }, false],
    [{ roles: 'operator-ish' }, false],
    [{ role: 'operator' }, false],
    [{}, false],
  ])('claims %j make an operator: %s', async (claims, operator) => {
    const { verify } = await createTokenVerifier(
      { mode: 'secret', secret: SECRET },
      await mkdtemp(path.join(tmpdir(), 'avatar-gateway-tokens-')),
      { maxLifetimeS: 3600, operatorRole: { claim: 'roles', role: 'operator' } },
    );
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('ops')
      .setExpirationTime('10m')
      .sign(new TextEncoder().encode(SECRET));
    expect((await verify(token)).operator).toBe(operator);
  });
});

/** seen 10: a token must say when it ends, and not too far ahead (AUTH_MAX_TOKEN_LIFETIME_S). */
describe('token lifetime', () => {
  const secret = new TextEncoder().encode(SECRET);
  const now = () => Math.floor(Date.now() / 1000);
  const policyVerifier = async (maxLifetimeS: number) =>
    createTokenVerifier(
      { mode: 'secret', secret: SECRET },
      await mkdtemp(path.join(tmpdir(), 'avatar-gateway-tokens-')),
      { maxLifetimeS, operatorRole: { claim: 'roles', role: 'operator' } },
    );

  it('refuses a token without exp', async () => {
    const { verify } = await verifier();
    const forever = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('alice')
      .sign(secret);
    await expect(verify(forever)).rejects.toThrow(/exp/);
  });

  it('refuses a token that lasts longer than the maximum lifetime, by exp - iat or by exp - now', async () => {
    const { verify } = await policyVerifier(3600);
    const longFromIat = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('alice')
      .setIssuedAt(now() - 7000)
      .setExpirationTime(now() + 600)
      .sign(secret);
    await expect(verify(longFromIat)).rejects.toThrow(/lifetime/);
    const longFromNow = await sign('alice', now() + 7200);
    await expect(verify(longFromNow)).rejects.toThrow(/lifetime/);
    expect((await verify(await sign('alice', now() + 3000))).id).toBe('alice');
  });
});
