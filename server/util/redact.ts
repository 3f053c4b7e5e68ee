/**
 * Credentials out of what is logged or shown: a URL's password (redis://:PASSWORD@host, user:PASSWORD@) and secret
 * query parameters (?key=, ?token=). Pure.
 */

/** Query parameters whose values are credentials. */
const SECRET_PARAMS = ['key', 'token', 'password', 'secret'];

/** `url` with its password and secret query values replaced by `***`; text that is no URL is returned as it is. */
export function redactUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return redactText(url);
  }
  if (u.password) u.password = '***';
  for (const p of SECRET_PARAMS) if (u.searchParams.has(p)) u.searchParams.set(p, '***');
  return u.toString().replace(/%2A%2A%2A/g, '***');
}

/** Redacts every URL userinfo password and secret query value inside free text (an error message, a log line). */
export function redactText(text: string): string {
  return text
    .replace(/(\b[a-z][a-z0-9+.-]*:\/\/[^\s/@:]*:)[^\s/@]*@/gi, '$1***@')
    .replace(new RegExp(`([?&](?:${SECRET_PARAMS.join('|')})=)[^&\\s"']*`, 'gi'), '$1***');
}
