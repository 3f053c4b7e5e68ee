/**
 * The ICE part of the media config (server/config.ts holds it in `config.media`): STUN/TURN servers from env, TURN
 * with time-limited credentials in coturn's shared-secret REST scheme, and the pure functions that mint what clients
 * and the server's own peers get. Pure: no I/O, the clock comes in as an argument.
 *
 * coturn's REST scheme (turnserver `use-auth-secret` + `static-auth-secret`): the username is
 * `<expiry, unix seconds>:<id>` and the password is base64(HMAC-SHA1(secret, username)). coturn recomputes the HMAC
 * with the same secret and refuses an expired or wrong one (401); the secret itself never leaves the server.
 */
import { createHmac } from 'node:crypto';
import type { IceServer } from '../types/protocol.js';

export interface TurnConfig {
  /**
   * TURN URLs handed out with time-limited credentials, e.g. ['turn:turn.example.com:3478?transport=udp',
   * 'turns:turn.example.com:5349?transport=tcp']; default [] (env AVATAR_TURN_URLS, comma-separated).
   */
  urls: string[];
  /** coturn's `static-auth-secret`; required with `urls`, at least 16 characters; default null (env AVATAR_TURN_SECRET). */
  secret: string | null;
  /**
   * How long handed-out credentials stay valid, ms; default 24 h (env AVATAR_TURN_TTL_HOURS). coturn checks the expiry
   * on every allocation refresh too, so a connection lasting longer than this loses its relay: keep it above the
   * longest session (a client that joins again gets fresh credentials).
   */
  ttlMs: number;
}

/** The slice of `config.media` this module reads and checks. */
export interface IceConfig {
  iceServers: IceServer[];
  turn: TurnConfig;
  serverPeersUseIce: boolean;
}

export function defaultTurnConfig(): TurnConfig {
  return { urls: [], secret: null, ttlMs: 24 * 3600_000 };
}

const ICE_URL = /^(stun|stuns|turn|turns):[^\s]+$/;
const TURN_URL = /^turns?:[^\s]+$/;
/** What coturn accepts after the expiry: no separator (':'), no spaces; the id is only seen in coturn's logs. */
const TURN_ID = /^[A-Za-z0-9_.@-]{1,64}$/;

function list(v: string): string[] {
  return v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

function onOff(v: string, name: string, fail: (m: string) => never): boolean {
  if (/^(1|on|true|yes)$/i.test(v)) return true;
  if (/^(0|off|false|no)$/i.test(v)) return false;
  return fail(`env ${name} must be on or off (got "${v}")`);
}

/**
 * Applies AVATAR_ICE_SERVERS (comma-separated stun:/turn: URLs, or a JSON array of RTCIceServer objects for servers
 * with fixed credentials), AVATAR_TURN_URLS, AVATAR_TURN_SECRET, AVATAR_TURN_TTL_HOURS and AVATAR_SERVER_PEERS_ICE
 * (on/off) to `m`, in place.
 */
export function applyIceEnv(m: IceConfig, env: Record<string, string | undefined>, fail: (m: string) => never): void {
  const servers = env.AVATAR_ICE_SERVERS?.trim();
  if (servers) {
    if (servers.startsWith('[')) {
      try {
        m.iceServers = JSON.parse(servers) as IceServer[];
      } catch {
        fail('env AVATAR_ICE_SERVERS must be comma-separated stun:/turn: URLs or a JSON array of ICE servers');
      }
    } else m.iceServers = list(servers).map((urls) => ({ urls }));
  }
  if (env.AVATAR_TURN_URLS) m.turn.urls = list(env.AVATAR_TURN_URLS);
  if (env.AVATAR_TURN_SECRET) m.turn.secret = env.AVATAR_TURN_SECRET;
  const hours = env.AVATAR_TURN_TTL_HOURS;
  if (hours !== undefined && hours !== '') {
    const h = Number(hours);
    if (!Number.isFinite(h)) fail(`env AVATAR_TURN_TTL_HOURS must be a number (got "${hours}")`);
    m.turn.ttlMs = Math.round(h * 3600_000);
  }
  if (env.AVATAR_SERVER_PEERS_ICE)
    m.serverPeersUseIce = onOff(env.AVATAR_SERVER_PEERS_ICE, 'AVATAR_SERVER_PEERS_ICE', fail);
}

/** Checks the slice; `fail` throws CONFIG_INVALID naming the option. */
export function validateIceConfig(m: IceConfig, fail: (m: string) => never): void {
  if (!Array.isArray(m.iceServers)) fail('"media.iceServers" must be an array of ICE servers');
  m.iceServers.forEach((s, i) => {
    const where = `media.iceServers[${i}]`;
    if (typeof s !== 'object' || s === null || Array.isArray(s)) fail(`"${where}" must be an object with urls`);
    const urls: unknown[] = Array.isArray(s.urls) ? s.urls : [s.urls];
    if (urls.length === 0 || !urls.every((u) => typeof u === 'string' && ICE_URL.test(u)))
      fail(`"${where}.urls" must be stun:, stuns:, turn: or turns: URLs`);
    for (const k of Object.keys(s))
      if (!['urls', 'username', 'credential'].includes(k)) fail(`"${where}" has an unknown key "${k}"`);
    if (s.username !== undefined && typeof s.username !== 'string') fail(`"${where}.username" must be a string`);
    if (s.credential !== undefined && typeof s.credential !== 'string') fail(`"${where}.credential" must be a string`);
    const turn = urls.some((u) => typeof u === 'string' && TURN_URL.test(u));
    if (turn && (s.username === undefined || s.credential === undefined))
      fail(`"${where}" is a TURN server without username and credential (for coturn's shared secret use media.turn)`);
  });
  const t = m.turn;
  if (!Array.isArray(t.urls) || !t.urls.every((u) => typeof u === 'string' && TURN_URL.test(u)))
    fail('"media.turn.urls" must be turn: or turns: URLs (env AVATAR_TURN_URLS)');
  if (t.secret !== null && (typeof t.secret !== 'string' || t.secret.length < 16 || /\s/.test(t.secret)))
    fail('"media.turn.secret" must be at least 16 characters without spaces (env AVATAR_TURN_SECRET)');
  if (t.urls.length > 0 && t.secret === null)
    fail('"media.turn.urls" needs "media.turn.secret", the static-auth-secret of the TURN server (AVATAR_TURN_SECRET)');
  if (t.urls.length === 0 && t.secret !== null)
    fail('"media.turn.secret" is set without "media.turn.urls" (AVATAR_TURN_URLS)');
  if (!Number.isInteger(t.ttlMs) || t.ttlMs < 60_000 || t.ttlMs > 7 * 24 * 3600_000)
    fail('"media.turn.ttlMs" must be an integer number of ms from 1 min to 7 days (env AVATAR_TURN_TTL_HOURS)');
  if (typeof m.serverPeersUseIce !== 'boolean') fail('"media.serverPeersUseIce" must be a boolean');
}

/**
 * Time-limited TURN credentials in coturn's shared-secret REST scheme.
 * @param expiresAt unix time in seconds after which coturn refuses them.
 * @param id who they are for, as coturn logs it (letters, digits, _ . @ -): never a secret or personal data.
 * @throws TypeError for an empty secret, a bad id or a non-integer expiry.
 */
export function turnCredentials(
  secret: string,
  id: string,
  expiresAt: number,
): { username: string; credential: string } {
  if (typeof secret !== 'string' || secret === '') throw new TypeError('turnCredentials: empty secret');
  if (!TURN_ID.test(id)) throw new TypeError('turnCredentials: id must be 1-64 letters, digits, _ . @ -');
  if (!Number.isSafeInteger(expiresAt) || expiresAt < 0)
    throw new TypeError('turnCredentials: expiresAt must be unix seconds');
  const username = `${expiresAt}:${id}`;
  return { username, credential: createHmac('sha1', secret).update(username).digest('base64') };
}

/**
 * The ICE servers for one client or one server peer: the configured ones as they are, plus the TURN URLs with fresh
 * credentials valid for `turn.ttlMs` from `nowMs`, and never past `notAfterMs` (a room link's expiry: the relay ends
 * with the link). `id` names the holder in coturn's logs (an opaque room or session id; characters coturn would
 * refuse are replaced).
 */
export function iceServersFor(m: IceConfig, id: string, nowMs: number, notAfterMs = Infinity): IceServer[] {
  const out = m.iceServers.map((s) => ({ ...s }));
  const { urls, secret, ttlMs } = m.turn;
  if (urls.length > 0 && secret !== null) {
    const safeId = id.replace(/[^A-Za-z0-9_.@-]/g, '_').slice(0, 64) || 'avatar';
    const expiresAt = Math.floor(Math.min(nowMs + ttlMs, notAfterMs) / 1000);
    out.push({ urls: [...urls], ...turnCredentials(secret, safeId, expiresAt) });
  }
  return out;
}
