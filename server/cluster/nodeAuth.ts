/**
 * Node-to-node requests (the internal pipe API) are signed with the cluster's shared secret (the token secret every
 * node must share anyway, or room links would not work across nodes):
 *
 *   x-avatar-node: <nodeId>.<unix ms>.<base64url HMAC-SHA256(secret, "<METHOD> <path> <nodeId> <unix ms> <sha256(body)>")>
 *
 * A request older or newer than MAX_SKEW_MS is refused, so a captured request cannot be replayed later.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { AppError } from '../errors.js';

export const NODE_AUTH_HEADER = 'x-avatar-node';
export const MAX_SKEW_MS = 30_000;

function mac(secret: string, method: string, path: string, nodeId: string, at: number, body: string): Buffer {
  const digest = createHash('sha256').update(body).digest('hex');
  return createHmac('sha256', secret).update(`${method.toUpperCase()} ${path} ${nodeId} ${at} ${digest}`).digest();
}

/** The header value for one request. */
export function signNodeRequest(
  secret: string,
  nodeId: string,
  method: string,
  path: string,
  body: string,
  now = Date.now(),
): string {
  return `${nodeId}.${now}.${mac(secret, method, path, nodeId, now, body).toString('base64url')}`;
}

/**
 * Checks a request's header; returns the calling node's id.
 * @throws AppError('TOKEN_INVALID') for a missing, malformed, stale or forged header.
 */
export function verifyNodeRequest(
  secret: string,
  header: string | undefined,
  method: string,
  path: string,
  body: string,
  now = Date.now(),
): string {
  const m = /^([A-Za-z0-9_-]{1,64})\.(\d{1,16})\.([A-Za-z0-9_-]{43})$/.exec(header ?? '');
  if (!m) throw new AppError('TOKEN_INVALID', `missing or malformed ${NODE_AUTH_HEADER} header`);
  const [, nodeId, atText, sig] = m as unknown as [string, string, string, string];
  const at = Number(atText);
  if (Math.abs(now - at) > MAX_SKEW_MS)
    throw new AppError('TOKEN_INVALID', 'node request too old or from the future (clock skew?)');
  const want = mac(secret, method, path, nodeId, at, body);
  const got = Buffer.from(sig, 'base64url');
  if (got.length !== want.length || !timingSafeEqual(got, want))
    throw new AppError('TOKEN_INVALID', 'node request signature mismatch');
  return nodeId;
}
