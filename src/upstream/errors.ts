/**
 * kie's answers, sorted by what the gateway can do about them. kie reports errors in the envelope's `code`,
 * sometimes also in the HTTP status; both are read alike.
 */

export type KieFailureKind =
  /** 402: the account is out of credits. */
  | 'insufficient_credits'
  /** 401, 404, 422, 433, 501, 505 and other refusals a retry cannot fix. */
  | 'rejected'
  /** 429, 455, 5xx, or no connection: kie did not take the request, so sending it again is safe. */
  | 'retryable'
  /** The request may have reached kie but no answer came back: a create must not be sent again blindly. */
  | 'unknown_outcome';

export class KieError extends Error {
  override name = 'KieError';
  constructor(
    readonly kind: KieFailureKind,
    /** kie's code, or 0 when there was no answer. */
    readonly code: number,
    message: string,
  ) {
    super(message);
  }

  get retryable(): boolean {
    return this.kind === 'retryable';
  }
}

const retryableCodes = new Set([429, 455]);

export function kindForCode(code: number): KieFailureKind {
  if (code === 402) return 'insufficient_credits';
  if (retryableCodes.has(code) || (code >= 500 && code !== 501 && code !== 505)) return 'retryable';
  return 'rejected';
}
