/**
 * Where a browser request comes from, from the headers browsers set and pages cannot (Origin, Sec-Fetch-*). Pure.
 *
 * - A navigation the user started: the address typed in or opened from outside the browser (`Sec-Fetch-Site: none`),
 *   or a link on this server's own pages (`same-origin`), top level (`Sec-Fetch-Mode: navigate`,
 *   `Sec-Fetch-Dest: document`). Another site sending the user here is `cross-site` or `same-site`; a client that
 *   sends no Sec-Fetch headers proves nothing and is treated as not started by the user.
 * - A same-origin request: `Origin` is this server's origin (the configured public URL, or the Host the request was
 *   sent to, either scheme: TLS may end at a proxy); or no Origin with `Sec-Fetch-Site: same-origin`. `Origin: null`
 *   (sandboxed frames, some redirects) is never same-origin.
 */
import { AppError } from '../errors.js';

type Headers = Readonly<Record<string, string>>;

/** Methods that change state: with cookie authentication they need a same-origin request. */
export const UNSAFE_METHODS: ReadonlySet<string> = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** True for a top-level navigation the user started (typed in, or from this server's own pages). */
export function isUserNavigation(headers: Headers): boolean {
  const site = headers['sec-fetch-site'];
  return (
    (site === 'none' || site === 'same-origin') &&
    headers['sec-fetch-mode'] === 'navigate' &&
    headers['sec-fetch-dest'] === 'document'
  );
}

/** The origin (scheme://host[:port]) of a URL, or null when it is not an http(s) URL. */
function originOf(url: string): string | null {
  try {
    const u = new URL(url);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.origin : null;
  } catch {
    return null;
  }
}

/** True when the request comes from a page of this server (see the module comment). */
export function isSameOrigin(headers: Headers, publicUrl: string | null): boolean {
  const origin = headers['origin'];
  if (origin === undefined) return headers['sec-fetch-site'] === 'same-origin';
  const o = originOf(origin);
  if (o === null || o !== origin.toLowerCase().replace(/\/$/, '')) return false;
  if (publicUrl !== null && o === originOf(publicUrl)) return true;
  const host = headers['host'];
  if (!host) return false;
  return o === originOf(`http://${host}`) || o === originOf(`https://${host}`);
}

/**
 * Refuses a state-changing request that is not same-origin.
 * @throws AppError('ORIGIN_REFUSED')
 */
export function requireSameOrigin(headers: Headers, publicUrl: string | null): void {
  if (!isSameOrigin(headers, publicUrl))
    throw new AppError('ORIGIN_REFUSED', "a signed-in change must come from the studio's own pages");
}
