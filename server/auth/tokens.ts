/**
 * Room tokens: `base64url(JSON payload) + "." + base64url(HMAC-SHA256(secret, first part))`.
 * The payload names the room, the role and the expiry (`exp`, ms since the epoch). Verification recomputes the MAC
 * and compares it in constant time before the payload is parsed, so a forged payload is never looked at.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { AppError } from '../errors.js';
import type { Role } from '../types/protocol.js';

export interface TokenPayload {
  room: string;
  role: Role;
  /** Expiry, ms since the epoch. */
  exp: number;
  /** The room's link version when signed (links are revoked by raising the room's version); default 0. */
  v?: number;
}

/** Tokens longer than this are refused before any work. */
export const MAX_TOKEN_LENGTH = 2048;

function mac(secret: string, body: string): Buffer {
  return createHmac('sha256', secret).update(body).digest();
}

/** Signs a payload. @throws TypeError for a malformed payload or an empty secret. */
export function signToken(payload: TokenPayload, secret: string): string {
  if (!secret) throw new TypeError('signToken: empty secret');
  if (typeof payload.room !== 'string' || !payload.room)
    throw new TypeError('signToken: room must be a non-empty string');
  if (payload.role !== 'performer' && payload.role !== 'viewer') throw new TypeError('signToken: bad role');
  if (!Number.isFinite(payload.exp)) throw new TypeError('signToken: exp must be a number');
  if (payload.v !== undefined && (!Number.isInteger(payload.v) || payload.v < 0))
    throw new TypeError('signToken: v must be a non-negative integer');
  const fields = { room: payload.room, role: payload.role, exp: payload.exp, ...(payload.v ? { v: payload.v } : {}) };
  const body = Buffer.from(JSON.stringify(fields)).toString('base64url');
  return `${body}.${mac(secret, body).toString('base64url')}`;
}

/**
 * Verifies a token and returns its payload.
 * @throws AppError('TOKEN_INVALID') for anything malformed or not signed with `secret`; ('TOKEN_EXPIRED') when
 * `exp <= now`.
 */
export function verifyToken(token: unknown, secret: string, now: number = Date.now()): TokenPayload {
  if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_LENGTH) {
    throw new AppError('TOKEN_INVALID', 'malformed token');
  }
  const dot = token.indexOf('.');
  if (dot <= 0 || dot !== token.lastIndexOf('.')) throw new AppError('TOKEN_INVALID', 'malformed token');
  const body = token.slice(0, dot);
  const sig = Buffer.from(token.slice(dot + 1), 'base64url');
  const expected = mac(secret, body);
  if (sig.length !== expected.length || !timingSafeEqual(sig, expected))
    throw new AppError('TOKEN_INVALID', 'bad token signature');
  let payload: unknown;
  try {
    payload = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
  } catch (err) {
    throw new AppError('TOKEN_INVALID', 'malformed token', { cause: err });
  }
  const p = payload as Partial<TokenPayload> | null;
  if (
    typeof p !== 'object' ||
    p === null ||
    typeof p.room !== 'string' ||
    (p.role !== 'performer' && p.role !== 'viewer') ||
    typeof p.exp !== 'number' ||
    (p.v !== undefined && (typeof p.v !== 'number' || !Number.isInteger(p.v) || p.v < 0))
  ) {
    throw new AppError('TOKEN_INVALID', 'malformed token payload');
  }
  if (p.exp <= now) throw new AppError('TOKEN_EXPIRED', 'token expired');
  return { room: p.room, role: p.role, exp: p.exp, v: p.v ?? 0 };
}

/** Extracts the token from an `Authorization: Bearer <token>` header value; null when absent or another scheme. */
export function bearerToken(header: string | undefined): string | null {
  if (!header) return null;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m ? m[1]! : null;
}

/**
 * A short id of one link (token), for counting what the link holds (viewers per link) without keeping the token: the
 * same payload signs to the same token, so a room's viewer link is one id however many people use it.
 */
export function linkId(token: string): string {
  return createHash('sha256').update(token).digest('base64url').slice(0, 22);
}
