import { createTokenVerifier } from '../auth/tokens.js';
import { loadConfig } from '../config.js';

// `npm run -s token -- <userId> [expiresIn] [--operator]`: a development token, signed with the secret in DATA_DIR;
// with --operator it carries the operator role (AUTH_OPERATOR_CLAIM, AUTH_OPERATOR_ROLE). Only the token goes to
// stdout, so `TOKEN=$(npm run -s token -- alice)` captures it whole; hints go to stderr.
const operator = process.argv.includes('--operator');
const [userId, expiresIn] = process.argv.slice(2).filter((arg) => arg !== '--operator');
if (!userId) {
  console.error('usage: npm run -s token -- <userId> [expiresIn, e.g. 1h or 30d] [--operator]');
  process.exit(1);
}
const config = loadConfig();
const verifier = await createTokenVerifier(config.auth, config.dataDir, config.tokenPolicy);
if (!verifier.signDevelopmentToken) {
  console.error('npm run token works in development mode only (AUTH_JWT_SECRET or AUTH_JWKS_URL is set)');
  process.exit(1);
}
const roles = operator ? [config.tokenPolicy.operatorRole.role] : [];
const token = await verifier.signDevelopmentToken(userId, expiresIn, roles);
console.error(`a development token for "${userId}"; send it as: Authorization: Bearer <token>`);
console.log(token);
