/**
 * A small method + path router. Patterns are literal segments and `:name` parameters
 * (`/api/portraits/:id/image`); a trailing `*` segment matches the rest of the path (`/dist/*`, parameter `*`).
 * Pure: matching knows nothing about uWebSockets.js.
 */

export type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'OPTIONS';

export interface RouteOptions {
  /** Largest request body this route reads, bytes; 0 (default) reads none. */
  maxBody?: number;
}

interface Route<H> {
  method: Method;
  segments: string[];
  handler: H;
  options: RouteOptions;
}

export type Match<H> =
  | { kind: 'found'; handler: H; params: Record<string, string>; options: RouteOptions }
  | { kind: 'method-not-allowed'; allow: Method[] }
  | { kind: 'not-found' };

function split(path: string): string[] {
  return path.split('/').filter((s) => s.length > 0);
}

export class Router<H> {
  readonly #routes: Route<H>[] = [];

  /** Adds a route. @throws TypeError for a malformed pattern. */
  add(method: Method, pattern: string, handler: H, options: RouteOptions = {}): this {
    if (!pattern.startsWith('/')) throw new TypeError(`route pattern must start with "/": ${pattern}`);
    const segments = split(pattern);
    const star = segments.indexOf('*');
    if (star !== -1 && star !== segments.length - 1) throw new TypeError(`"*" must be the last segment: ${pattern}`);
    this.#routes.push({ method, segments, handler, options });
    return this;
  }

  /**
   * Finds the route for a method and a (decoded-per-segment) path. Literal segments beat parameters (routes are tried
   * in the order added; add literal routes first where both could match). HEAD falls back to GET.
   */
  match(method: string, path: string): Match<H> {
    let parts: string[];
    try {
      parts = split(path).map((s) => decodeURIComponent(s));
    } catch {
      return { kind: 'not-found' };
    }
    const allow = new Set<Method>();
    let getFallback: Match<H> | null = null;
    for (const r of this.#routes) {
      const params = matchSegments(r.segments, parts);
      if (!params) continue;
      if (r.method === method) return { kind: 'found', handler: r.handler, params, options: r.options };
      if (method === 'HEAD' && r.method === 'GET' && !getFallback)
        getFallback = { kind: 'found', handler: r.handler, params, options: r.options };
      allow.add(r.method);
    }
    if (getFallback) return getFallback;
    if (allow.size > 0) return { kind: 'method-not-allowed', allow: [...allow] };
    return { kind: 'not-found' };
  }
}

function matchSegments(pattern: string[], parts: string[]): Record<string, string> | null {
  const params: Record<string, string> = {};
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i]!;
    if (p === '*') {
      params['*'] = parts.slice(i).join('/');
      return params;
    }
    const part = parts[i];
    if (part === undefined) return null;
    if (p.startsWith(':')) params[p.slice(1)] = part;
    else if (p !== part) return null;
  }
  return parts.length === pattern.length ? params : null;
}
