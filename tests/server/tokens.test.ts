import { describe, expect, it } from 'vitest';
import { bearerToken, signToken, verifyToken } from '../../server/auth/tokens.js';
import { AppError } from '../../server/errors.js';

const secret = 'unit-secret-0123456789';

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return err instanceof AppError ? err.code : `non-AppError: ${String(err)}`;
  }
  return 'no error';
}

describe('room tokens', () => {
  it('round-trips room, role, expiry and link version (0 when absent)', () => {
    const exp = Date.now() + 60_000;
    const t = signToken({ room: 'abc', role: 'viewer', exp }, secret);
    expect(t).toMatch(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    expect(verifyToken(t, secret)).toEqual({ room: 'abc', role: 'viewer', exp, v: 0 });
    const t3 = signToken({ room: 'abc', role: 'performer', exp, v: 3 }, secret);
    expect(verifyToken(t3, secret)).toEqual({ room: 'abc', role: 'performer', exp, v: 3 });
    expect(() => signToken({ room: 'abc', role: 'viewer', exp, v: -1 }, secret)).toThrow(TypeError);
  });

  it('refuses a token signed with another secret, a tampered payload or signature, and garbage', () => {
    const t = signToken({ room: 'abc', role: 'viewer', exp: Date.now() + 60_000 }, secret);
    expect(code(() => verifyToken(t, 'another-secret-0123456'))).toBe('TOKEN_INVALID');
    const [body, sig] = t.split('.') as [string, string];
    const forged = Buffer.from(JSON.stringify({ room: 'abc', role: 'performer', exp: Date.now() + 60_000 })).toString(
      'base64url',
    );
    expect(code(() => verifyToken(`${forged}.${sig}`, secret))).toBe('TOKEN_INVALID');
    const flipped = sig.slice(0, -2) + (sig.at(-2) === 'A' ? 'B' : 'A') + sig.at(-1);
    expect(code(() => verifyToken(`${body}.${flipped}`, secret))).toBe('TOKEN_INVALID');
    for (const bad of ['', 'x', 'a.b.c', '.abc', 42, null, undefined, {}, 'a'.repeat(5000)]) {
      expect(code(() => verifyToken(bad, secret))).toBe('TOKEN_INVALID');
    }
  });

  it('refuses an expired token with TOKEN_EXPIRED', () => {
    const t = signToken({ room: 'abc', role: 'performer', exp: Date.now() - 1 }, secret);
    expect(code(() => verifyToken(t, secret))).toBe('TOKEN_EXPIRED');
    const later = signToken({ room: 'abc', role: 'performer', exp: 2000 }, secret);
    expect(verifyToken(later, secret, 1999).role).toBe('performer');
    expect(code(() => verifyToken(later, secret, 2000))).toBe('TOKEN_EXPIRED');
  });

  it('reads bearer tokens', () => {
    expect(bearerToken('Bearer abc.def')).toBe('abc.def');
    expect(bearerToken('bearer   abc')).toBe('abc');
    expect(bearerToken('Basic abc')).toBeNull();
    expect(bearerToken(undefined)).toBeNull();
  });
});
