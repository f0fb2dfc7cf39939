import { createTokenVerifier } from '../auth/tokens.js';
import { loadConfig } from '../config.js';

// `npm run token -- <userId> [expiresIn]`: a development token, signed with the secret in DATA_DIR.
const [userId, expiresIn] = process.argv.slice(2);
if (!userId) {
  console.error('usage: npm run token -- <userId> [expiresIn, e.g. 1h or 30d]');
  process.exit(1);
}
const config = loadConfig();
const verifier = await createTokenVerifier(config.auth, config.dataDir, config.tokenPolicy);
if (!verifier.signDevelopmentToken) {
  console.error('npm run token works in development mode only (AUTH_JWT_SECRET or AUTH_JWKS_URL is set)');
  process.exit(1);
}
console.log(await verifier.signDevelopmentToken(userId, expiresIn));
