import { createTokenVerifier } from '../auth/tokens.js';
import { loadConfig } from '../config.js';

// `npm run -s token -- <userId> [expiresIn]`: a development token, signed with the secret in DATA_DIR. Only the
// token goes to stdout, so `TOKEN=$(npm run -s token -- alice)` captures it whole; hints go to stderr.
const [userId, expiresIn] = process.argv.slice(2);
if (!userId) {
  console.error('usage: npm run -s token -- <userId> [expiresIn, e.g. 1h or 30d]');
  process.exit(1);
}
const config = loadConfig();
const verifier = await createTokenVerifier(config.auth, config.dataDir, config.tokenPolicy);
if (!verifier.signDevelopmentToken) {
  console.error('npm run token works in development mode only (AUTH_JWT_SECRET or AUTH_JWKS_URL is set)');
  process.exit(1);
}
const token = await verifier.signDevelopmentToken(userId, expiresIn);
console.error(`a development token for "${userId}"; send it as: Authorization: Bearer <token>`);
console.log(token);
