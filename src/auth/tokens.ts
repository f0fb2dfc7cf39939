import { hash } from 'node:crypto';
import { createVerifier } from 'fast-jwt';
import { createRemoteJWKSet, type JWTPayload, jwtVerify, SignJWT } from 'jose';
import { LRUCache } from 'lru-cache';
import type { Config } from '../config.js';
import { loadDataDirSecret } from '../data-dir-secret.js';

export interface Viewer {
  /** The token's `sub`. */
  id: string;
  /** Unix seconds: the token's `exp` (every accepted token has one). */
  expiresAt: number;
  /** The token carries the operator role (TokenPolicy.operatorRole): operator-only fields answer. */
  operator: boolean;
}

export class AuthenticationError extends Error {
  override name = 'AuthenticationError';
}

export interface TokenVerifier {
  verify(token: string): Promise<Viewer>;
  /** Present in development mode only: signs a token for any user id. */
  signDevelopmentToken?: (userId: string, expiresIn?: string, roles?: string[]) => Promise<string>;
}

/** `Authorization: Bearer <token>` → token, or undefined when absent. Any other scheme is an error. */
export function bearerToken(header: string | null | undefined): string | undefined {
  if (!header) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!match?.[1]) throw new AuthenticationError('Authorization must be "Bearer <token>"');
  return match[1];
}

export interface TokenPolicy {
  /** A token whose lifetime (exp - iat, and exp - now) is longer than this is refused. */
  maxLifetimeS: number;
  /** The claim that lists the user's roles, and the role that makes an operator. */
  operatorRole: { claim: string; role: string };
}

/** Thirty-one days: development tokens are signed for thirty. */
const DEFAULT_POLICY: TokenPolicy = {
  maxLifetimeS: 31 * 24 * 3600,
  operatorRole: { claim: 'roles', role: 'operator' },
};

/** Whether `payload` lists `role` in `claim`: an array of roles, or a string of them separated by spaces. */
function hasRole(payload: JWTPayload, { claim, role }: TokenPolicy['operatorRole']): boolean {
  const value = payload[claim];
  if (Array.isArray(value)) return value.includes(role);
  return typeof value === 'string' && value.split(' ').includes(role);
}

export async function createTokenVerifier(
  auth: Config['auth'],
  dataDir: string,
  policy: TokenPolicy = DEFAULT_POLICY,
): Promise<TokenVerifier> {
  if (auth.mode === 'jwks') {
    const check = jwksChecker(createRemoteJWKSet(new URL(auth.jwksUrl)), auth);
    return { verify: rememberVerified((token) => verifyWith(token, check, policy)) };
  }
  const secret =
    auth.mode === 'secret' ? new TextEncoder().encode(auth.secret) : await loadDevelopmentSecret(dataDir);
  const claims = auth.mode === 'secret' ? auth : {};
  const checkHs256 = hs256Checker(secret, claims);
  const verifier: TokenVerifier = {
    verify: rememberVerified((token) => verifyWith(token, checkHs256, policy)),
  };
  if (auth.mode === 'development') {
    verifier.signDevelopmentToken = (userId, expiresIn = '30d', roles = []) =>
      new SignJWT(roles.length > 0 ? { [policy.operatorRole.claim]: roles } : {})
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject(userId)
        .setIssuedAt()
        .setExpirationTime(expiresIn)
        .sign(secret);
  }
  return verifier;
}

/**
 * HS256 tokens are checked by fast-jwt, synchronously on node's own HMAC. jose checks them with WebCrypto, an
 * asynchronous job on libuv's thread pool for every token: after a restart every client's token is new to the
 * gateway, and 2,000 reconnecting SSE clients spent a quarter of the gateway's busy time in those jobs
 * (`npm run bench -- --only reconnect-storm --profile`). jose still checks tokens against a JWKS and signs
 * development tokens.
 */
function hs256Checker(secret: Uint8Array, claims: Claims): (token: string) => Promise<JWTPayload> {
  const check = createVerifier({
    key: Buffer.from(secret),
    algorithms: ['HS256'],
    requiredClaims: ['exp'],
    ...(claims.issuer ? { allowedIss: claims.issuer } : {}),
    ...(claims.audience ? { allowedAud: claims.audience } : {}),
  });
  return async (token) => check(token) as JWTPayload;
}

/** How long a verified token is taken on trust; never past its own `exp`. */
const VERIFIED_TOKEN_TTL_MS = 60_000;
const VERIFIED_TOKENS_KEPT = 10_000;

/**
 * Remembers tokens that verified, for up to a minute and never past their expiry. An app sends the same token
 * with every request, and checking its signature was the largest single cost of a small query (`npm run
 * bench -- --only history --profile`: jose, ~15% of the gateway's busy time). Failures are not remembered, so
 * a token that was rejected is checked again.
 *
 * A token is remembered by its SHA-256 digest (a third of a microsecond), which stands for the exact string
 * that verified. Kept as itself, the token would be a slice of the header or message it was cut from and hold
 * all of it: with one token per client, 10,000 clients that came and went left 1.25 MB of such strings for a
 * minute (`npm run bench -- --only memory --profile`, the "after" snapshot). The digest also keeps bearer
 * tokens out of the heap once their request is done.
 */
function rememberVerified(verify: (token: string) => Promise<Viewer>): (token: string) => Promise<Viewer> {
  const verified = new LRUCache<string, Viewer>({ max: VERIFIED_TOKENS_KEPT });
  return async (token) => {
    const key = hash('sha256', token, 'base64url');
    const known = verified.get(key);
    if (known) return known;
    const viewer = await verify(token);
    const untilExpiry =
      viewer.expiresAt === undefined ? Number.POSITIVE_INFINITY : viewer.expiresAt * 1000 - Date.now();
    const ttl = Math.min(VERIFIED_TOKEN_TTL_MS, untilExpiry);
    if (ttl > 0) verified.set(key, viewer, { ttl });
    return viewer;
  };
}

type Claims = { issuer?: string | undefined; audience?: string | undefined };

/** jose's check of a token against a JWKS: what `hs256Checker` is for HS256. */
function jwksChecker(
  keys: ReturnType<typeof createRemoteJWKSet>,
  claims: Claims,
): (token: string) => Promise<JWTPayload> {
  const options = {
    requiredClaims: ['exp'],
    ...(claims.issuer ? { issuer: claims.issuer } : {}),
    ...(claims.audience ? { audience: claims.audience } : {}),
  };
  return async (token) => (await jwtVerify(token, keys, options)).payload;
}

/**
 * A token without `exp` is refused by either check (it would be valid forever, and so would a socket or
 * stream opened with it); the lifetime and the roles are read here.
 */
async function verifyWith(
  token: string,
  check: (token: string) => Promise<JWTPayload>,
  policy: TokenPolicy,
): Promise<Viewer> {
  let payload: JWTPayload;
  try {
    payload = await check(token);
  } catch (error) {
    throw new AuthenticationError(`Invalid token: ${(error as Error).message}`);
  }
  if (!payload.sub) throw new AuthenticationError('Invalid token: it has no sub claim');
  const expiresAt = payload.exp as number;
  // Both measures: `iat` is optional, and without it a token minted for years would pass on exp - iat alone.
  const lifetimeS = Math.max(
    expiresAt - Date.now() / 1000,
    payload.iat === undefined ? 0 : expiresAt - payload.iat,
  );
  if (lifetimeS > policy.maxLifetimeS) {
    throw new AuthenticationError(`Invalid token: its lifetime is over ${policy.maxLifetimeS} s`);
  }
  return { id: payload.sub, expiresAt, operator: hasRole(payload, policy.operatorRole) };
}

/**
 * Development mode signs tokens with a random secret kept in DATA_DIR, so tokens printed by `npm start`
 * and `npm run -s token` keep working across restarts of the same checkout.
 */
export function loadDevelopmentSecret(dataDir: string): Promise<Uint8Array> {
  return loadDataDirSecret(dataDir, 'dev-jwt-secret');
}
