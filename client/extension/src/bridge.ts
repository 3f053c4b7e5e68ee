/**
 * The isolated-world content script: the only way between a page's MAIN world (inject.ts) and the extension. It
 * answers 'status' from storage, relays 'offer' and 'end' to the service worker, and tells the page when the
 * signed-in state changes (so the page's device list can follow). It never hands the room token to the page.
 */
import { chromeApi } from './chromeApi.js';
import {
  PAGE_CHANNEL,
  STORAGE_KEY,
  type AvatarStatus,
  type OfferReply,
  type PageMessage,
  type PageRequest,
  type Reply,
  type StoredLink,
} from './protocol.js';

function toPage(msg: PageMessage): void {
  // Same window: the message never leaves this tab's frame.
  window.postMessage(msg, '*');
}

function statusOf(v: unknown): AvatarStatus {
  const link = v as Partial<StoredLink> | undefined;
  return link && typeof link.server === 'string' && typeof link.room === 'string'
    ? { signedIn: true, server: link.server, room: link.room }
    : { signedIn: false };
}

/** This frame's live avatar sessions: ended by the service worker when the page goes away without stopping them. */
const live = new Set<string>();

async function handle(req: PageRequest): Promise<Reply<unknown>> {
  if (req.type === 'status') {
    const v = (await chromeApi.storage.local.get(STORAGE_KEY))[STORAGE_KEY];
    return { ok: true, data: statusOf(v) };
  }
  if (req.type === 'end') live.delete(req.resource);
  const msg = req.type === 'offer' ? { type: 'offer', sdp: req.sdp } : { type: 'end', resource: req.resource };
  const reply = (await chromeApi.runtime.sendMessage(msg)) as Reply<unknown>;
  if (req.type === 'offer' && reply.ok) live.add((reply.data as OfferReply).resource);
  return reply;
}

// A closed tab or a navigation does not stop the page's tracks: end its sessions here so that the server does not
// keep encoding for a peer that is gone until ICE times out. The message leaves before the frame is torn down.
window.addEventListener('pagehide', () => {
  for (const resource of live) void chromeApi.runtime.sendMessage({ type: 'end', resource });
  live.clear();
});

function isPageRequest(v: unknown): v is { channel: string; dir: 'to-extension'; id: number; request: PageRequest } {
  if (typeof v !== 'object' || v === null) return false;
  const m = v as {
    channel?: unknown;
    dir?: unknown;
    id?: unknown;
    request?: { type?: unknown; sdp?: unknown; resource?: unknown };
  };
  if (m.channel !== PAGE_CHANNEL || m.dir !== 'to-extension' || typeof m.id !== 'number' || !m.request) return false;
  const r = m.request;
  return (
    r.type === 'status' ||
    (r.type === 'offer' && typeof r.sdp === 'string') ||
    (r.type === 'end' && typeof r.resource === 'string')
  );
}

window.addEventListener('message', (e: MessageEvent<unknown>) => {
  if (e.source !== window || !isPageRequest(e.data)) return;
  const { id, request } = e.data;
  handle(request).then(
    (reply) => toPage({ channel: PAGE_CHANNEL, dir: 'to-page', id, reply }),
    (err: unknown) =>
      toPage({
        channel: PAGE_CHANNEL,
        dir: 'to-page',
        id,
        reply: { ok: false, error: { code: 'INTERNAL', message: err instanceof Error ? err.message : String(err) } },
      }),
  );
});

chromeApi.storage.onChanged.addListener((changes, area) => {
  const change = changes[STORAGE_KEY];
  if (area !== 'local' || !change) return;
  toPage({ channel: PAGE_CHANNEL, dir: 'to-page', id: 0, status: statusOf(change.newValue) });
});
