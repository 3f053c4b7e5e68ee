/**
 * The extension's service worker: keeps the signed-in room (server, room, token) in chrome.storage.local and does
 * every HTTP exchange with the avatar server, so that the token never enters a web page and the page's own
 * Content-Security-Policy does not apply to these requests. Pages reach it through the bridge content script.
 *
 * Requests (chrome.runtime.sendMessage, only from this extension's own scripts): 'status', 'offer' (a WHEP offer →
 * answer + session resource), 'end' (DELETE a session of the signed-in room), 'signIn' (a viewer link, checked against
 * the server before it is kept), 'signOut'.
 */
import { fetchWhepTransport, parseAvatarLink, whepEndpoint, type AvatarSource } from '../../lib/avatarStream.js';
import { ClientError } from '../../lib/errors.js';
import { chromeApi } from './chromeApi.js';
import {
  STORAGE_KEY,
  type AvatarStatus,
  type OfferReply,
  type Reply,
  type StoredLink,
  type WorkerRequest,
} from './protocol.js';

async function stored(): Promise<StoredLink | null> {
  const v = (await chromeApi.storage.local.get(STORAGE_KEY))[STORAGE_KEY] as StoredLink | undefined;
  return v && typeof v.server === 'string' && typeof v.room === 'string' && typeof v.token === 'string' ? v : null;
}

async function requireLink(): Promise<StoredLink> {
  const link = await stored();
  if (!link)
    throw new ClientError('FORBIDDEN', 'not signed in: open the Live Avatar extension and paste your viewer link');
  return link;
}

/**
 * Checks a link against its server without starting anything: a WHEP POST with an empty offer passes the token and
 * room checks and stops at the SDP check (400 INVALID_SDP); any other answer says what is wrong with the link.
 */
async function checkLink(s: AvatarSource): Promise<void> {
  let res: Response;
  try {
    res = await fetch(whepEndpoint(s), {
      method: 'POST',
      headers: { 'content-type': 'application/sdp', authorization: `Bearer ${s.token}` },
      body: '',
    });
  } catch (err) {
    throw new ClientError('NETWORK', `the avatar server ${s.server} cannot be reached`, { cause: err });
  }
  const body = (await res.json().catch(() => ({}))) as { code?: string; message?: string };
  if (res.status === 400 && body.code === 'INVALID_SDP') return;
  throw new ClientError((body.code ?? 'INTERNAL') as ClientError['code'], body.message ?? `HTTP ${res.status}`, {
    status: res.status,
  });
}

async function handle(req: WorkerRequest): Promise<unknown> {
  switch (req.type) {
    case 'status': {
      const link = await stored();
      const s: AvatarStatus = link ? { signedIn: true, server: link.server, room: link.room } : { signedIn: false };
      return s;
    }
    case 'offer': {
      const link = await requireLink();
      const r: OfferReply = await fetchWhepTransport.offer(link, req.sdp);
      return r;
    }
    case 'end': {
      const link = await requireLink();
      // Only sessions of the signed-in room, on its server, are ended with its token.
      if (!req.resource.startsWith(`${whepEndpoint(link)}/`))
        throw new ClientError('FORBIDDEN', 'not a session of the signed-in room');
      await fetchWhepTransport.end(link, req.resource);
      return null;
    }
    case 'signIn': {
      const s = parseAvatarLink(req.link);
      await checkLink(s);
      const link: StoredLink = { ...s, signedInAt: Date.now() };
      await chromeApi.storage.local.set({ [STORAGE_KEY]: link });
      const st: AvatarStatus = { signedIn: true, server: s.server, room: s.room };
      return st;
    }
    case 'signOut':
      await chromeApi.storage.local.remove(STORAGE_KEY);
      return { signedIn: false } satisfies AvatarStatus;
  }
}

function isRequest(m: unknown): m is WorkerRequest {
  if (typeof m !== 'object' || m === null) return false;
  const r = m as Record<string, unknown>;
  switch (r.type) {
    case 'status':
    case 'signOut':
      return true;
    case 'offer':
      return typeof r.sdp === 'string' && r.sdp.length < 64 * 1024;
    case 'end':
      return typeof r.resource === 'string';
    case 'signIn':
      return typeof r.link === 'string' && r.link.length < 4096;
    default:
      return false;
  }
}

chromeApi.runtime.onMessage.addListener((message, sender, sendResponse) => {
  if (sender.id !== chromeApi.runtime.id) return false;
  if (!isRequest(message)) {
    sendResponse({ ok: false, error: { code: 'BAD_REQUEST', message: 'unknown request' } } satisfies Reply<never>);
    return false;
  }
  handle(message).then(
    (data) => sendResponse({ ok: true, data } satisfies Reply<unknown>),
    (err: unknown) => {
      const e =
        err instanceof ClientError
          ? err
          : new ClientError('INTERNAL', err instanceof Error ? err.message : String(err));
      sendResponse({
        ok: false,
        error: { code: e.code, message: e.message, ...(e.status ? { status: e.status } : {}) },
      } satisfies Reply<never>);
    },
  );
  // Keeps sendResponse valid until the promise settles.
  return true;
});
