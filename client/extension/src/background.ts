/**
 * The extension's service worker: keeps the signed-in room (server, room, token) and the sites the user approved in
 * chrome.storage.local and does every HTTP exchange with the avatar server, so that the token never enters a web page
 * and the page's own Content-Security-Policy does not apply to these requests. Pages reach it through the bridge
 * content script.
 *
 * It alone decides which frames may use the avatar: from the browser's `sender.origin` and `sender.frameId` (what a
 * message says about its page counts for nothing), with `frameVerdict` over the approved sites. A frame that is not
 * allowed learns that the avatar is not available, and nothing else.
 *
 * From content scripts (the bridge, for its frame): 'status' (available or not), 'offer' (a WHEP offer → answer +
 * session resource), 'end' (DELETE a session of the signed-in room). From the extension's own pages (popup) only:
 * 'status' (the signed-in room), 'signIn' (a viewer link, checked against the server before it is kept), 'signOut',
 * 'sites', 'approve', 'revoke', 'tabSite' (the site open in a tab, from its content script's `sender.origin`).
 */
import { fetchWhepTransport, parseAvatarLink, whepEndpoint, type AvatarSource } from '../../lib/avatarStream.js';
import { ClientError } from '../../lib/errors.js';
import { chromeApi, type MessageSender } from './chromeApi.js';
import {
  SITES_KEY,
  STORAGE_KEY,
  frameVerdict,
  siteOrigin,
  type ApprovedSite,
  type AvatarStatus,
  type FrameRequest,
  type OfferReply,
  type PageStatus,
  type PopupRequest,
  type Reply,
  type StoredLink,
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

async function sites(): Promise<ApprovedSite[]> {
  const v = (await chromeApi.storage.local.get(SITES_KEY))[SITES_KEY];
  return Array.isArray(v)
    ? (v as unknown[]).filter(
        (x): x is ApprovedSite =>
          typeof x === 'object' &&
          x !== null &&
          typeof (x as ApprovedSite).origin === 'string' &&
          typeof (x as ApprovedSite).frames === 'boolean',
      )
    : [];
}

/**
 * The site open in each tab: its top frame's origin as the browser told it with that frame's 'status' request, and
 * when the tab was last seen or activated (the popup opened as a tab offers the last page tab). In session storage
 * (the worker may be stopped between events), at most MAX_TABS entries, the oldest dropped first.
 */
const TABS_KEY = 'liveAvatarTabs';
const MAX_TABS = 200;
type TabSites = Record<string, { origin: string; touchedAt: number }>;
let tabsQueue: Promise<unknown> = Promise.resolve();

async function tabSites(): Promise<TabSites> {
  const v = (await chromeApi.storage.session.get(TABS_KEY))[TABS_KEY];
  return typeof v === 'object' && v !== null ? (v as TabSites) : {};
}

/** Read-modify-write of the tab map, one at a time. */
function updateTabs(change: (t: TabSites) => void): Promise<void> {
  const next = tabsQueue.then(async () => {
    const t = await tabSites();
    change(t);
    const ids = Object.keys(t).sort((a, b) => t[b]!.touchedAt - t[a]!.touchedAt);
    for (const id of ids.slice(MAX_TABS)) delete t[id];
    await chromeApi.storage.session.set({ [TABS_KEY]: t });
  });
  tabsQueue = next.catch(() => undefined);
  return next;
}

chromeApi.tabs.onActivated.addListener(({ tabId }) => {
  void updateTabs((t) => {
    const e = t[String(tabId)];
    if (e) e.touchedAt = Date.now();
  });
});
chromeApi.tabs.onRemoved.addListener((tabId) => {
  void updateTabs((t) => {
    delete t[String(tabId)];
  });
});

/** Throws FORBIDDEN unless the sending frame may use the avatar devices. */
async function requireAllowedFrame(sender: MessageSender): Promise<void> {
  const topOrigin = sender.tab?.id === undefined ? null : ((await tabSites())[String(sender.tab.id)]?.origin ?? null);
  const verdict = frameVerdict(await sites(), { origin: sender.origin, frameId: sender.frameId, topOrigin });
  if (verdict === 'not-approved') throw new ClientError('FORBIDDEN', 'this site is not approved for the avatar camera');
  if (verdict === 'frame-not-approved')
    throw new ClientError('FORBIDDEN', 'this site is not approved for the avatar camera inside other sites');
}

async function handleFrame(req: FrameRequest, sender: MessageSender): Promise<unknown> {
  switch (req.type) {
    case 'status': {
      const tabId = sender.tab?.id;
      if (sender.frameId === 0 && tabId !== undefined && sender.origin)
        await updateTabs((t) => {
          t[String(tabId)] = { origin: sender.origin!, touchedAt: Date.now() };
        });
      const available =
        (await stored()) !== null &&
        (await requireAllowedFrame(sender).then(
          () => true,
          () => false,
        ));
      return { available } satisfies PageStatus;
    }
    case 'offer': {
      await requireAllowedFrame(sender);
      const link = await requireLink();
      const r: OfferReply = await fetchWhepTransport.offer(link, req.sdp);
      return r;
    }
    case 'end': {
      // Ending is allowed to any frame that holds a session's address (a site removed meanwhile still ends its own).
      const link = await requireLink();
      // Only sessions of the signed-in room, on its server, are ended with its token.
      if (!req.resource.startsWith(`${whepEndpoint(link)}/`))
        throw new ClientError('FORBIDDEN', 'not a session of the signed-in room');
      await fetchWhepTransport.end(link, req.resource);
      return null;
    }
  }
}

async function handlePopup(req: PopupRequest): Promise<unknown> {
  switch (req.type) {
    case 'status': {
      const link = await stored();
      const s: AvatarStatus = link ? { signedIn: true, server: link.server, room: link.room } : { signedIn: false };
      return s;
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
    case 'sites':
      return sites();
    case 'approve': {
      const origin = siteOrigin(req.origin);
      const list = (await sites()).filter((s) => s.origin !== origin);
      list.push({ origin, frames: req.frames, approvedAt: Date.now() });
      await chromeApi.storage.local.set({ [SITES_KEY]: list });
      return list;
    }
    case 'revoke': {
      const list = (await sites()).filter((s) => s.origin !== req.origin);
      await chromeApi.storage.local.set({ [SITES_KEY]: list });
      return list;
    }
    case 'tabSite': {
      const t = await tabSites();
      if (req.tabId !== null) return t[String(req.tabId)]?.origin ?? null;
      const last = Object.values(t).sort((a, b) => b.touchedAt - a.touchedAt)[0];
      return last?.origin ?? null;
    }
  }
}

function isFrameRequest(r: Record<string, unknown>): r is FrameRequest {
  switch (r.type) {
    case 'status':
      return true;
    case 'offer':
      return typeof r.sdp === 'string' && r.sdp.length < 64 * 1024;
    case 'end':
      return typeof r.resource === 'string' && r.resource.length < 4096;
    default:
      return false;
  }
}

function isPopupRequest(r: Record<string, unknown>): r is PopupRequest {
  switch (r.type) {
    case 'status':
    case 'signOut':
    case 'sites':
      return true;
    case 'signIn':
      return typeof r.link === 'string' && r.link.length < 4096;
    case 'approve':
      return typeof r.origin === 'string' && r.origin.length < 2048 && typeof r.frames === 'boolean';
    case 'revoke':
      return typeof r.origin === 'string';
    case 'tabSite':
      return r.tabId === null || typeof r.tabId === 'number';
    default:
      return false;
  }
}

/** The extension's own pages (popup, options), as opposed to content scripts in web pages. */
function fromExtensionPage(sender: MessageSender): boolean {
  return sender.origin === `chrome-extension://${chromeApi.runtime.id}`;
}

function toWire(err: unknown): Reply<never> {
  const e =
    err instanceof ClientError ? err : new ClientError('INTERNAL', err instanceof Error ? err.message : String(err));
  return { ok: false, error: { code: e.code, message: e.message, ...(e.status ? { status: e.status } : {}) } };
}

chromeApi.runtime.onMessage.addListener((message, sender, sendResponse) => {
  if (sender.id !== chromeApi.runtime.id) return false;
  const r = typeof message === 'object' && message !== null ? (message as Record<string, unknown>) : {};
  let work: Promise<unknown>;
  if (fromExtensionPage(sender)) {
    work = isPopupRequest(r) ? handlePopup(r) : Promise.reject(new ClientError('BAD_REQUEST', 'unknown request'));
  } else if (/^https?:\/\//.test(sender.origin ?? '') && sender.frameId !== undefined) {
    work = isFrameRequest(r)
      ? handleFrame(r, sender)
      : Promise.reject(new ClientError('BAD_REQUEST', 'unknown request'));
  } else {
    work = Promise.reject(new ClientError('FORBIDDEN', 'not from a web page or the extension'));
  }
  work.then(
    (data) => sendResponse({ ok: true, data } satisfies Reply<unknown>),
    (err: unknown) => sendResponse(toWire(err)),
  );
  // Keeps sendResponse valid until the promise settles.
  return true;
});
