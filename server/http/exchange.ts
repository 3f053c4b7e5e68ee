/**
 * One HTTP request/response on uWebSockets.js, wrapped so that handlers can be async:
 * the request's method, path, query and headers are copied while uWS's request object is valid (only during the
 * synchronous handler call), the body is read from the first tick (uWS loses data otherwise) with a size cap, every
 * write is corked, and nothing is written after the client went away or after a reply was sent.
 */
import { STATUS_CODES } from 'node:http';
import type uWS from 'uWebSockets.js';
import { AppError, httpStatus, RateLimitError, toPublicError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Router } from './router.js';

export type Handler = (ex: HttpExchange, params: Record<string, string>) => void | Promise<void>;

const bodyMethods = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

function statusLine(status: number): string {
  return `${status} ${STATUS_CODES[status] ?? 'Unknown'}`;
}

export class HttpExchange {
  readonly method: string;
  /** The path without the query string (not percent-decoded). */
  readonly path: string;
  readonly query: URLSearchParams;
  /** Request headers, lower-case names (a repeated header keeps its last value). */
  readonly headers: Readonly<Record<string, string>>;
  readonly remoteIp: string;
  readonly #res: uWS.HttpResponse;
  #aborted = false;
  #done = false;
  #body: Promise<Buffer> | null = null;
  #onAbort: (() => void) | null = null;

  constructor(res: uWS.HttpResponse, req: uWS.HttpRequest) {
    this.#res = res;
    this.method = req.getMethod().toUpperCase();
    this.path = req.getUrl();
    this.query = new URLSearchParams(req.getQuery() ?? '');
    const headers: Record<string, string> = {};
    req.forEach((k, v) => {
      headers[k] = v;
    });
    this.headers = headers;
    this.remoteIp = Buffer.from(res.getRemoteAddressAsText()).toString();
    res.onAborted(() => {
      this.#aborted = true;
      this.#onAbort?.();
    });
  }

  /** The client went away; nothing more can be written. */
  get aborted(): boolean {
    return this.#aborted;
  }
  /** A reply was sent (or the client went away). */
  get done(): boolean {
    return this.#done || this.#aborted;
  }

  /**
   * Starts reading the body (must be called during the synchronous uWS handler). Bodies over `maxBytes` are refused
   * as early as possible: from Content-Length before any byte is read, else as soon as the running count passes the
   * cap; the 413 reply closes the connection so the rest is never read.
   */
  startBody(maxBytes: number): void {
    const declared = this.headers['content-length'];
    if (declared !== undefined && Number(declared) > maxBytes) {
      const err = new AppError('PAYLOAD_TOO_LARGE', `body larger than ${maxBytes} bytes`);
      this.#body = Promise.reject(err);
      // The rejection is answered here (413); a handler that awaits body() sees it too.
      this.#body.catch(() => undefined);
      this.error(err, true);
      return;
    }
    this.#body = new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let total = 0;
      this.#onAbort = () => reject(new AppError('BAD_REQUEST', 'client went away'));
      this.#res.onData((chunk, isLast) => {
        if (this.#done) return;
        total += chunk.byteLength;
        if (total > maxBytes) {
          const err = new AppError('PAYLOAD_TOO_LARGE', `body larger than ${maxBytes} bytes`);
          this.error(err, true);
          reject(err);
          return;
        }
        // uWS reuses the chunk's memory after this callback: copy it.
        chunks.push(Buffer.from(new Uint8Array(chunk)));
        if (isLast) resolve(Buffer.concat(chunks, total));
      });
    });
    this.#body.catch(() => undefined);
  }

  /** The request body (empty when the route reads none). */
  body(): Promise<Buffer> {
    return this.#body ?? Promise.resolve(Buffer.alloc(0));
  }

  /** Sends a reply. `body` omitted or HEAD: no body. `close` asks the client to close the connection. */
  send(status: number, headers: Record<string, string>, body?: string | Uint8Array, close = false): void {
    if (this.done) return;
    this.#done = true;
    this.#res.cork(() => {
      this.#res.writeStatus(statusLine(status));
      this.#res.writeHeader('x-content-type-options', 'nosniff');
      for (const [k, v] of Object.entries(headers)) this.#res.writeHeader(k, v);
      if (this.method === 'HEAD')
        this.#res.endWithoutBody(
          body === undefined ? 0 : typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength,
          close,
        );
      else this.#res.end(body ?? '', close);
    });
  }

  /** Sends a JSON reply. */
  json(status: number, value: unknown, headers: Record<string, string> = {}): void {
    this.send(
      status,
      { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...headers },
      JSON.stringify(value),
    );
  }

  /** Sends `{code, message}` with the code's HTTP status; unknown errors become 500 INTERNAL (no details). */
  error(err: unknown, close = false): void {
    const pub = toPublicError(err);
    const headers: Record<string, string> = {
      'content-type': 'application/json; charset=utf-8',
      'cache-control': 'no-store',
    };
    if (err instanceof RateLimitError) headers['retry-after'] = String(err.retryAfterS);
    if (pub.code === 'API_KEY_REQUIRED' || pub.code === 'API_KEY_INVALID')
      headers['www-authenticate'] = 'Bearer realm="live-avatar"';
    // `close`: stop reading the rest of an oversized body; uWS ends the connection once the reply is written.
    this.send(httpStatus[pub.code], headers, JSON.stringify(pub), close);
  }
}

/**
 * Dispatches one uWS request through `router`: 404 NOT_FOUND, 405 METHOD_NOT_ALLOWED (with Allow), body reading
 * per the route's `maxBody`, and every thrown error as `{code, message}`.
 */
export function dispatch(router: Router<Handler>, res: uWS.HttpResponse, req: uWS.HttpRequest, log: Logger): void {
  const ex = new HttpExchange(res, req);
  const match = router.match(ex.method, ex.path);
  if (match.kind === 'not-found') {
    ex.error(new AppError('NOT_FOUND', 'no such resource'));
    return;
  }
  if (match.kind === 'method-not-allowed') {
    const allow = match.allow.includes('GET') ? [...match.allow, 'HEAD'] : match.allow;
    const pub = { code: 'METHOD_NOT_ALLOWED', message: `method ${ex.method} not allowed` } as const;
    ex.json(httpStatus[pub.code], pub, { allow: allow.join(', ') });
    return;
  }
  if (bodyMethods.has(ex.method)) ex.startBody(match.options.maxBody ?? 0);
  if (ex.done) return;
  let result: void | Promise<void>;
  try {
    result = match.handler(ex, match.params);
  } catch (err) {
    fail(ex, err, log);
    return;
  }
  if (result instanceof Promise) result.catch((err: unknown) => fail(ex, err, log));
}

function fail(ex: HttpExchange, err: unknown, log: Logger): void {
  if (!(err instanceof AppError)) log.error('request failed', { method: ex.method, path: ex.path, err });
  ex.error(err);
}
