/**
 * Node-to-node trust, from the cluster's shared secret (the token secret every node must share anyway, or room links
 * would not work across nodes). Redis is not trusted: whoever can write to it must not be able to send clients or
 * nodes elsewhere, nor replay a node's request.
 *
 * Requests of the internal pipe API carry
 *
 *   x-avatar-node: <nodeId>.<unix ms>.<nonce>.<base64url HMAC-SHA256(secret,
 *                  "<METHOD> <path> <nodeId> <unix ms> <nonce> <sha256(body)>")>
 *
 * A request older than MAX_SKEW_MS (401 REQUEST_STALE), dated more than MAX_FUTURE_SKEW_MS ahead (401 REQUEST_STALE:
 * a timestamp from the future would stretch the replay window), or whose nonce was seen within the window (401
 * REQUEST_REPLAYED, NonceGuard: in memory, and in Redis so that a request captured on its way to one node cannot be
 * replayed to another) is refused; a missing, malformed or forged header is 401 TOKEN_INVALID.
 *
 * Node records in the directory (the URL other nodes call, and where WHIP/WHEP redirect) carry an HMAC of their
 * fields (`sig`): a record planted in Redis without the secret is ignored (signNodeRecord / verifyNodeRecord).
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { AppError } from '../errors.js';

export const NODE_AUTH_HEADER = 'x-avatar-node';
/** How old a node request may be (and how long its nonce is remembered). */
export const MAX_SKEW_MS = 30_000;
/** How far ahead of this node's clock a node request may be dated (clocks of the nodes differ a little). */
export const MAX_FUTURE_SKEW_MS = 2_000;

function mac(
  secret: string,
  method: string,
  path: string,
  nodeId: string,
  at: number,
  nonce: string,
  body: string,
): Buffer {
  const digest = createHash('sha256').update(body).digest('hex');
  return createHmac('sha256', secret)
    .update(`${method.toUpperCase()} ${path} ${nodeId} ${at} ${nonce} ${digest}`)
    .digest();
}

function equal(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** The header value for one request (a fresh nonce unless given: tests replay one on purpose). */
export function signNodeRequest(
  secret: string,
  nodeId: string,
  method: string,
  path: string,
  body: string,
  now = Date.now(),
  nonce = randomBytes(16).toString('base64url'),
): string {
  return `${nodeId}.${now}.${nonce}.${mac(secret, method, path, nodeId, now, nonce, body).toString('base64url')}`;
}

/** A request whose signature and time checked out; its nonce still has to be claimed (NonceGuard). */
export interface NodeRequest {
  nodeId: string;
  at: number;
  nonce: string;
}

/**
 * Checks a request's header (signature first, so that nothing unsigned reaches the nonce store).
 * @throws AppError('TOKEN_INVALID') for a missing, malformed or forged header, ('REQUEST_STALE') for one too old or
 * from the future.
 */
export function verifyNodeRequest(
  secret: string,
  header: string | undefined,
  method: string,
  path: string,
  body: string,
  now = Date.now(),
): NodeRequest {
  const m = /^([A-Za-z0-9_-]{1,64})\.(\d{1,16})\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})$/.exec(header ?? '');
  if (!m) throw new AppError('TOKEN_INVALID', `missing or malformed ${NODE_AUTH_HEADER} header`);
  const [, nodeId, atText, nonce, sig] = m as unknown as [string, string, string, string, string];
  const at = Number(atText);
  if (!equal(Buffer.from(sig, 'base64url'), mac(secret, method, path, nodeId, at, nonce, body)))
    throw new AppError('TOKEN_INVALID', 'node request signature mismatch');
  if (at > now + MAX_FUTURE_SKEW_MS)
    throw new AppError('REQUEST_STALE', 'node request dated in the future (clock skew?)');
  if (now - at > MAX_SKEW_MS) throw new AppError('REQUEST_STALE', 'node request too old (clock skew?)');
  return { nodeId, at, nonce };
}

/**
 * Remembers the nonces of accepted node requests until they could no longer pass the time check (MAX_SKEW_MS after
 * their date): in memory, and through `shared` (Redis SET NX with a TTL) across the nodes. Bounded: entries leave when
 * their window ends.
 */
export class NonceGuard {
  readonly #seen = new Map<string, number>();
  readonly #shared: ((nonce: string, ttlMs: number) => Promise<boolean>) | null;
  #lastSweep = 0;

  /** @param shared claims a nonce cluster-wide; false when another node (or this one) had it already. */
  constructor(shared: ((nonce: string, ttlMs: number) => Promise<boolean>) | null = null) {
    this.#shared = shared;
  }

  get size(): number {
    return this.#seen.size;
  }

  /** Claims a verified request's nonce. @throws AppError('REQUEST_REPLAYED') when it was seen in its window. */
  async claim(req: NodeRequest, now = Date.now()): Promise<void> {
    this.#sweep(now);
    const until = req.at + MAX_SKEW_MS;
    if (this.#seen.has(req.nonce)) throw new AppError('REQUEST_REPLAYED', 'node request replayed');
    this.#seen.set(req.nonce, until);
    const ttlMs = Math.max(1, until - now) + MAX_FUTURE_SKEW_MS;
    if (this.#shared && !(await this.#shared(req.nonce, ttlMs)))
      throw new AppError('REQUEST_REPLAYED', 'node request replayed (seen by another node)');
  }

  #sweep(now: number): void {
    if (now - this.#lastSweep < 5_000) return;
    this.#lastSweep = now;
    for (const [n, until] of this.#seen) if (until < now) this.#seen.delete(n);
  }
}

/** The fields of a node record that its signature covers. */
export interface SignedNodeFields {
  nodeId: string;
  url: string;
  internalUrl: string;
  fanout: string;
}

function recordMac(secret: string, r: SignedNodeFields): Buffer {
  return createHmac('sha256', secret).update(`node-record ${r.nodeId} ${r.url} ${r.internalUrl} ${r.fanout}`).digest();
}

/** The record's signature (its `sig` field). */
export function signNodeRecord(secret: string, r: SignedNodeFields): string {
  return recordMac(secret, r).toString('base64url');
}

/** True when `sig` was made with the cluster's secret for exactly these fields. */
export function verifyNodeRecord(secret: string, r: SignedNodeFields, sig: unknown): boolean {
  return typeof sig === 'string' && equal(Buffer.from(sig, 'base64url'), recordMac(secret, r));
}
