/**
 * The isolated-world content script: the only way between a page's MAIN world (inject.ts) and the extension. It asks
 * the service worker whether this frame may use the avatar devices (the worker decides from the browser-attested
 * origin and frame), relays offers and session ends, and tells the page world when that changes (so the page's
 * device list can follow). It never hands the page the room token, the server, the room or a session's address.
 *
 * Threat model. The page's own scripts run in the MAIN world beside inject.ts: they can call, wrap or replace any
 * page-world function (navigator.permissions, postMessage, EventTarget, JSON) and read every window message and
 * every event whose type they know. They cannot read this script's variables (another JS world), cannot run before
 * document_start scripts, and cannot forge `sender.origin`/`sender.frameId` (the browser fills them in). Hence:
 * - no window messages: the old `postMessage` channel answered anything any script of the page posted. The page world
 *   and this script meet once, at document_start, before the page has any script (see HELLO_INJECT in protocol.ts);
 *   the node and the key they share then carry the only events this script listens to. A page that posts or
 *   dispatches raw messages, or replays the hello, gets no answer at all.
 * - the channel keeps forgeries out, but a page that calls the patched getUserMedia uses it legitimately, and a
 *   hostile page world might yet find a way in (a same-origin parent touching a new frame before document_start):
 *   so nothing depends on it alone. The service worker refuses every frame the user did not approve, and before any
 *   offer this script makes the browser's own camera (and microphone) permission request for the page's origin from
 *   here, with this world's untouched APIs (the page cannot fake `permissions.query` for it). Only where the browser
 *   has no such device at all (NotFoundError, nothing to ask for) is the user's approval of the site the consent.
 * - what an approved page learns: SDP, and an opaque handle per session (never its URL).
 */
import { chromeApi } from './chromeApi.js';
import {
  HELLO_BRIDGE,
  HELLO_INJECT,
  SITES_KEY,
  STORAGE_KEY,
  channelEvents,
  offeredKinds,
  type OfferReply,
  type PageMessage,
  type PageOfferReply,
  type PageRequest,
  type PageStatus,
  type Reply,
  type WireError,
} from './protocol.js';

const MAX_SDP = 64 * 1024;

let events: { up: string; down: string } | null = null;
/** The channel's node, from the page world's hello (see protocol.ts HELLO_INJECT). */
let channel: Element | null = null;
let lastStatus: PageStatus = { available: false };

function toPage(msg: PageMessage): void {
  if (!events || !channel) return;
  channel.dispatchEvent(new CustomEvent(events.down, { detail: JSON.stringify(msg) }));
}

/** This frame's live avatar sessions, by the handle the page knows: ended when the page goes away. */
const sessions = new Map<string, string>();

class BridgeError extends Error {
  constructor(readonly wire: WireError) {
    super(wire.message);
  }
}

async function worker<T>(msg: unknown): Promise<T> {
  const reply = (await chromeApi.runtime.sendMessage(msg)) as Reply<T> | undefined;
  if (!reply) throw new BridgeError({ code: 'INTERNAL', message: 'the extension did not answer' });
  if (!reply.ok) throw new BridgeError(reply.error);
  return reply.data;
}

async function frameStatus(): Promise<PageStatus> {
  const s = await worker<PageStatus>({ type: 'status' });
  return { available: s.available === true };
}

/**
 * The page's camera/microphone permission, asked by the browser for this origin exactly as the page's own request
 * would be (same prompt, same answer remembered); this world's `navigator` is not the page's. A refusal fails the
 * offer with the browser's NotAllowedError.
 */
async function ensurePermission(kinds: { video: boolean; audio: boolean }): Promise<void> {
  const state = (name: 'camera' | 'microphone'): Promise<string> =>
    navigator.permissions.query({ name }).then(
      (s) => s.state,
      () => 'prompt',
    );
  const needVideo = kinds.video && (await state('camera')) !== 'granted';
  const needAudio = kinds.audio && (await state('microphone')) !== 'granted';
  if (!needVideo && !needAudio) return;
  let s: MediaStream;
  try {
    s = await navigator.mediaDevices.getUserMedia({ video: needVideo, audio: needAudio });
  } catch (err) {
    // No camera/microphone of the machine's own: no permission to ask for (the browser refuses before any prompt).
    if (err instanceof DOMException && err.name === 'NotFoundError') return;
    const name = err instanceof DOMException ? err.name : 'NotAllowedError';
    throw new BridgeError({
      code: 'FORBIDDEN',
      message: `the browser refused the ${needVideo ? 'camera' : 'microphone'} permission`,
      domName: name,
    });
  }
  for (const t of s.getTracks()) t.stop();
}

async function handle(req: PageRequest): Promise<unknown> {
  switch (req.type) {
    case 'status':
      lastStatus = await frameStatus();
      return lastStatus;
    case 'offer': {
      // The kinds the offer really receives, not what the page world says it asked for.
      await ensurePermission(offeredKinds(req.sdp));
      const r = await worker<OfferReply>({ type: 'offer', sdp: req.sdp });
      const handle = crypto.randomUUID();
      sessions.set(handle, r.resource);
      return { answer: r.answer, handle } satisfies PageOfferReply;
    }
    case 'end': {
      const resource = sessions.get(req.handle);
      if (resource === undefined) throw new BridgeError({ code: 'BAD_REQUEST', message: 'no such session' });
      sessions.delete(req.handle);
      await worker<null>({ type: 'end', resource });
      return null;
    }
  }
}

/** The one shape the page world's script sends; anything else is dropped without an answer. */
function parseRequest(detail: unknown): { id: number; request: PageRequest } | null {
  if (typeof detail !== 'string' || detail.length > MAX_SDP + 1024) return null;
  let m: unknown;
  try {
    m = JSON.parse(detail);
  } catch {
    return null;
  }
  if (typeof m !== 'object' || m === null) return null;
  const { dir, id, request: r } = m as { dir?: unknown; id?: unknown; request?: Record<string, unknown> };
  if (dir !== 'up' || typeof id !== 'number' || !Number.isSafeInteger(id) || id < 1) return null;
  if (typeof r !== 'object' || r === null) return null;
  if (r.type === 'status') return { id, request: { type: 'status' } };
  if (r.type === 'offer' && typeof r.sdp === 'string' && r.sdp.length <= MAX_SDP)
    return { id, request: { type: 'offer', sdp: r.sdp } };
  if (r.type === 'end' && typeof r.handle === 'string' && r.handle.length <= 64)
    return { id, request: { type: 'end', handle: r.handle } };
  return null;
}

function onRequest(e: Event): void {
  const parsed = parseRequest((e as CustomEvent<unknown>).detail);
  if (!parsed) return;
  const { id, request } = parsed;
  handle(request).then(
    (data) => toPage({ dir: 'down', id, reply: { ok: true, data } }),
    (err: unknown) =>
      toPage({
        dir: 'down',
        id,
        reply: {
          ok: false,
          error:
            err instanceof BridgeError
              ? err.wire
              : { code: 'INTERNAL', message: err instanceof Error ? err.message : String(err) },
        },
      }),
  );
}

/** The handshake: answered once, to the page world's script, which runs before any script of the page. */
function onHello(e: Event): void {
  const node = e.target;
  if (channel || !(node instanceof Element)) return;
  document.removeEventListener(HELLO_INJECT, onHello);
  channel = node;
  const key = `live-avatar:${crypto.randomUUID()}`;
  events = channelEvents(key);
  channel.addEventListener(events.up, onRequest);
  channel.dispatchEvent(new CustomEvent(HELLO_BRIDGE, { detail: key }));
}
document.addEventListener(HELLO_INJECT, onHello);
// When inject.ts ran first, its hello went unheard: this asks it again (answered synchronously, still before the page).
document.dispatchEvent(new CustomEvent(HELLO_BRIDGE, { detail: 'ready' }));

/** Ends this frame's sessions (the page is leaving, or may no longer use the avatar). */
function endAll(): void {
  for (const resource of sessions.values()) void chromeApi.runtime.sendMessage({ type: 'end', resource });
  sessions.clear();
}

// A closed tab or a navigation does not stop the page's tracks: end its sessions here so that the server does not
// keep encoding for a peer that is gone until ICE times out. The message leaves before the frame is torn down.
window.addEventListener('pagehide', endAll);

// Sign-in, sign-out, a site approved or removed: the page world learns whether the devices are there now, and a site
// that lost them loses its live avatar streams too (the server ends the sessions; the page's tracks end).
chromeApi.storage.onChanged.addListener((changes, area) => {
  if (area !== 'local' || (!changes[STORAGE_KEY] && !changes[SITES_KEY])) return;
  frameStatus().then(
    (s) => {
      if (!s.available) endAll();
      if (s.available === lastStatus.available) return;
      lastStatus = s;
      toPage({ dir: 'down', id: 0, status: s });
    },
    // The extension was reloaded or removed under this page: its old script has nobody left to ask or tell.
    () => undefined,
  );
});
