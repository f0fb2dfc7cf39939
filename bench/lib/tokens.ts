import { SignJWT } from 'jose';

/** The HS256 secret the bench gives the gateway (AUTH_JWT_SECRET) and the baselines. */
export const BENCH_JWT_SECRET = 'avatar-gateway-bench-secret-0123456789-abcdef';
/** The kie webhook HMAC key: callbacks are signed in every scenario, as a production account would. */
export const BENCH_HMAC_KEY = 'avatar-gateway-bench-webhook-key';

const key = new TextEncoder().encode(BENCH_JWT_SECRET);

/** A user token as an identity provider would issue it. */
export function signToken(userId: string): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(userId)
    .setIssuedAt()
    .setExpirationTime('2h')
    .sign(key);
}

export function jwtKey(): Uint8Array {
  return key;
}
