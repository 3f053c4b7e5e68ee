/**
 * REST helpers for the portrait and room API. Every non-2xx answer becomes a ClientError carrying the server's
 * stable code (`{ code, message }` in the body), so pages show the same codes as for socket errors.
 */
import { ClientError, type ClientErrorCode } from './errors.js';

/** A stored portrait as GET /api/portraits lists it. */
export interface PortraitSummary {
  id: string;
  /** The uploaded file's name, if the server keeps it. */
  name?: string;
  width?: number;
  height?: number;
  createdAt?: string;
  uploader?: string | null;
  /** URL of the normalised image; when absent the page uses `/api/portraits/:id/image`. */
  url?: string;
}

/** What POST /api/rooms answers. */
export interface CreatedRoom {
  roomId: string;
  performerUrl: string;
  viewerUrl: string;
  performerToken: string;
  viewerToken: string;
  expiresAt?: string;
}

export interface RestOptions {
  /** Server origin, e.g. 'http://127.0.0.1:8080'; default: the page's own origin. */
  baseUrl?: string;
  /** fetch to use (tests); default globalThis.fetch. */
  fetch?: typeof fetch;
}

function url(opts: RestOptions | undefined, p: string): string {
  const base = opts?.baseUrl ?? (typeof location !== 'undefined' ? location.origin : '');
  return new URL(p, base).toString();
}

async function call<T>(opts: RestOptions | undefined, p: string, init?: RequestInit): Promise<T> {
  const f = opts?.fetch ?? globalThis.fetch.bind(globalThis);
  let res: Response;
  try {
    res = await f(url(opts, p), init);
  } catch (err) {
    throw new ClientError('NETWORK', 'the server cannot be reached', { cause: err });
  }
  const text = await res.text();
  let body: unknown = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
  }
  if (!res.ok) {
    // `{ code, message }`; `{ error: { code, message } }` is accepted too.
    const b = body as { code?: unknown; message?: unknown; error?: { code?: unknown; message?: unknown } } | null;
    const e = b && typeof b.code === 'string' ? b : b?.error;
    const code = (typeof e?.code === 'string' ? e.code : 'INTERNAL') as ClientErrorCode;
    const message = typeof e?.message === 'string' ? e.message : `HTTP ${res.status}`;
    throw new ClientError(code, message, { status: res.status });
  }
  return body as T;
}

/** Lists stored portraits, newest first as the server orders them. */
export async function listPortraits(opts?: RestOptions): Promise<PortraitSummary[]> {
  const body = await call<PortraitSummary[] | { portraits: PortraitSummary[] }>(opts, '/api/portraits');
  return Array.isArray(body) ? body : body.portraits;
}

/**
 * Uploads a portrait. `consent` must be true: the uploader confirms the right to animate the person shown; the server
 * refuses without it (CONSENT_REQUIRED) and records it with the upload.
 */
export async function uploadPortrait(
  file: Blob,
  consent: boolean,
  opts?: RestOptions & { filename?: string; consentVersion?: string },
): Promise<PortraitSummary> {
  const form = new FormData();
  const name = opts?.filename ?? (file instanceof File ? file.name : 'portrait');
  form.append('consent', consent ? 'true' : 'false');
  // The version of the text the uploader was shown (getConsent): the server refuses a stale one.
  if (opts?.consentVersion) form.append('consentVersion', opts.consentVersion);
  form.append('file', file, name);
  const body = await call<PortraitSummary | { portrait: PortraitSummary }>(opts, '/api/portraits', {
    method: 'POST',
    body: form,
  });
  return 'portrait' in body ? body.portrait : body;
}

/** The consent text uploads agree to, and its version (GET /api/consent). */
export async function getConsent(opts?: RestOptions): Promise<{ version: string; text: string }> {
  return call<{ version: string; text: string }>(opts, '/api/consent');
}

export async function deletePortrait(id: string, opts?: RestOptions): Promise<void> {
  await call<unknown>(opts, `/api/portraits/${encodeURIComponent(id)}`, { method: 'DELETE' });
}

/** Creates a room; the answer holds the performer's and viewers' links and tokens. */
export async function createRoom(opts?: RestOptions & { portraitId?: string }): Promise<CreatedRoom> {
  const payload = opts?.portraitId ? { portraitId: opts.portraitId } : {};
  return call<CreatedRoom>(opts, '/api/rooms', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(payload),
  });
}

/** The image URL for a portrait (same-origin path, so a proxy in front of the server does not break it). */
export function portraitImageUrl(p: PortraitSummary, opts?: RestOptions): string {
  return url(opts, `/api/portraits/${encodeURIComponent(p.id)}/image`);
}
