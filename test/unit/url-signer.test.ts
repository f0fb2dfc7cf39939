import { describe, expect, it } from 'vitest';
import { UrlSigner } from '../../src/storage/url-signer.js';

const key = new TextEncoder().encode('a-signing-key-of-at-least-32-characters');
const parse = (query: string) => new URLSearchParams(query);
const HOUR_S = 3_600;

describe('UrlSigner', () => {
  it('gives a player the same URL for a copy while the expiry minute lasts, and a new one after', () => {
    const signer = new UrlSigner(key);
    const start = Date.UTC(2026, 0, 1, 12, 0, 10);
    const first = signer.query('task/0.mp4', HOUR_S, start);
    expect(signer.query('task/0.mp4', HOUR_S, start + 30_000)).toBe(first);

    const next = signer.query('task/0.mp4', HOUR_S, start + 60_000);
    expect(next).not.toBe(first);
    expect(Number(parse(next).get('expires'))).toBe(Number(parse(first).get('expires')) + 60);
    for (const query of [first, next]) {
      const params = parse(query);
      expect(
        signer.verify('task/0.mp4', params.get('expires'), params.get('signature'), start + 60_000),
      ).toBe('valid');
    }
  });

  it("never hands one copy's signature to another", () => {
    const signer = new UrlSigner(key);
    const now = Date.UTC(2026, 0, 1, 12, 0, 0);
    const first = parse(signer.query('task-a/0.mp4', HOUR_S, now));
    const second = parse(signer.query('task-b/0.mp4', HOUR_S, now));
    expect(second.get('signature')).not.toBe(first.get('signature'));
    expect(signer.verify('task-b/0.mp4', first.get('expires'), first.get('signature'), now)).toBe('invalid');
    expect(signer.verify('task-b/0.mp4', second.get('expires'), second.get('signature'), now)).toBe('valid');
  });

  it('signs a URL that expires at its expiry, not a reused one past it', () => {
    const signer = new UrlSigner(key);
    const now = Date.UTC(2026, 0, 1, 12, 0, 0);
    const short = parse(signer.query('task/0.mp4', 1, now));
    expect(signer.verify('task/0.mp4', short.get('expires'), short.get('signature'), now + 2_000)).toBe(
      'expired',
    );
    const later = parse(signer.query('task/0.mp4', 1, now + 2_000));
    expect(signer.verify('task/0.mp4', later.get('expires'), later.get('signature'), now + 2_000)).toBe(
      'valid',
    );
  });
});
