import type { Config } from '../config.js';
import { GuardedFetcher } from '../inputs/ssrf-guard.js';

/** Redirects a CDN may take before the file: as many as an input's check allows. */
const RESULT_MAX_REDIRECTS = 5;

/**
 * The SSRF guard result downloads go through. A success callback's body (its result URLs) is not covered by
 * kie's signature, so the copier must not fetch whatever it names: private addresses are refused in
 * production (ALLOW_PRIVATE_INPUT_URLS, as for inputs), except kie's own origin, which the operator
 * configured (a simulator on localhost serves its results there).
 */
export function createResultFetcher(config: Config, kieOrigins: readonly string[]): GuardedFetcher {
  return new GuardedFetcher({
    allowPrivate: config.inputs.allowPrivate,
    // A connection's deadline; the copy as a whole has RESULT_COPY_TIMEOUT_MS.
    timeoutMs: config.storage.copyTimeoutMs,
    maxBytes: config.storage.maxBytes,
    maxRedirects: RESULT_MAX_REDIRECTS,
    trustedOrigins: kieOrigins,
  });
}
