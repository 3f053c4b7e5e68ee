/**
 * What the extension's parts say to each other, and the pure logic of the virtual devices.
 *
 * The parts: `inject` (the page's MAIN world: patches navigator.mediaDevices), `bridge` (an isolated-world content
 * script: relays between the page world and the extension), `background` (the service worker: holds the room token and
 * the approved sites, decides which frames may use the avatar, talks to the avatar server), `popup` (sign in / sign
 * out, approve and remove sites). Nothing of the link (token, server, room) enters a page: a page only learns whether
 * the avatar devices are there for it and exchanges SDP through the bridge.
 */
import { ClientError } from '../../lib/errors.js';

/** The virtual camera. Honest by name: the label says it is an AI avatar. */
export const AVATAR_CAMERA = {
  deviceId: 'live-avatar-camera',
  groupId: 'live-avatar',
  kind: 'videoinput',
  label: 'Live Avatar (AI avatar camera)',
} as const;

/** The performer's voice, delayed to match the avatar's video. */
export const AVATAR_MICROPHONE = {
  deviceId: 'live-avatar-microphone',
  groupId: 'live-avatar',
  kind: 'audioinput',
  label: "Live Avatar (performer's voice, AI avatar audio)",
} as const;

/** What the popup (an extension page) may know of the signed-in room. Never sent to a web page. */
export interface AvatarStatus {
  signedIn: boolean;
  /** Server origin and room, when signed in. */
  server?: string;
  room?: string;
}

/**
 * All a web page's scripts learn: whether the avatar devices are there for this frame (signed in, and the frame's
 * origin approved by the user). Nothing of the server, the room or the link.
 */
export interface PageStatus {
  available: boolean;
}

/** What the extension keeps in chrome.storage.local under STORAGE_KEY. */
export interface StoredLink {
  server: string;
  room: string;
  token: string;
  /** ms since the epoch. */
  signedInAt: number;
}
export const STORAGE_KEY = 'liveAvatarLink';

/** A site the user allowed to use the avatar devices (popup), kept in chrome.storage.local under SITES_KEY. */
export interface ApprovedSite {
  /** `scheme://host[:port]`, as `URL.origin` writes it. */
  origin: string;
  /** Also when the site is a frame inside a page of another site (off by default: top-level pages only). */
  frames: boolean;
  /** ms since the epoch. */
  approvedAt: number;
}
export const SITES_KEY = 'liveAvatarSites';

/**
 * The inject ⇄ bridge channel. Both scripts run at document_start, before any script of the page. The page world's
 * script makes a node that it never leaves in the document and dispatches HELLO_INJECT from it, once, while it is
 * attached for that instant; the bridge (listening on `document`) takes the node from the event's target and answers
 * the first hello only, with a random key, in an event on that node. From then on both sides talk only with
 * CustomEvents on that detached node whose type contains the key (`${key}:up` to the bridge, `${key}:down` to the page
 * world), a JSON string as detail. If the bridge runs second, it first dispatches HELLO_BRIDGE 'ready' on `document`
 * and the page world's script says hello again. No window message, nothing on the page's event paths: nothing the
 * page or another frame posts or dispatches reaches the extension.
 */
export const HELLO_INJECT = 'live-avatar-extension:hello';
export const HELLO_BRIDGE = 'live-avatar-extension:ready';
export const channelEvents = (key: string): { up: string; down: string } => ({ up: `${key}:up`, down: `${key}:down` });

/** Page world → bridge, on the keyed channel. `handle` is the bridge's name for a server session (not its URL). */
export type PageRequest = { type: 'status' } | { type: 'offer'; sdp: string } | { type: 'end'; handle: string };

export type PageMessage =
  | { dir: 'up'; id: number; request: PageRequest }
  | { dir: 'down'; id: number; reply: Reply<unknown> }
  | { dir: 'down'; id: 0; status: PageStatus };

/** Offer reply to the page: the server's answer and an opaque handle for ending the session. */
export interface PageOfferReply {
  answer: string;
  handle: string;
}

export interface WireError {
  code: string;
  message: string;
  status?: number;
  /** The browser's own DOMException name, when the browser refused (e.g. NotAllowedError for the camera permission). */
  domName?: string;
}
export type Reply<T> = { ok: true; data: T } | { ok: false; error: WireError };

/**
 * Bridge → service worker: asked for the frame that the content script runs in; the worker answers from the
 * browser's own `sender.origin` and `sender.frameId`, never from what the message says.
 */
export type FrameRequest = { type: 'status' } | { type: 'offer'; sdp: string } | { type: 'end'; resource: string };

/** Popup → service worker; refused from content scripts. */
export type PopupRequest =
  | { type: 'status' }
  | { type: 'signIn'; link: string }
  | { type: 'signOut' }
  | { type: 'sites' }
  | { type: 'approve'; origin: string; frames: boolean }
  | { type: 'revoke'; origin: string }
  /** The site open in a tab (the popup's own tab id excluded): the tab's top frame origin, or null. */
  | { type: 'tabSite'; tabId: number | null };

export type WorkerRequest = FrameRequest | PopupRequest;

export interface OfferReply {
  answer: string;
  resource: string;
}

/** Why a frame may or may not use the avatar devices. */
export type FrameVerdict = 'allowed' | 'not-approved' | 'frame-not-approved';

/**
 * Decides from the browser-attested frame (origin, frameId; the origin of its tab's top frame where known) whether a
 * frame may use the avatar devices: a top frame of an approved origin; a subframe of an approved origin inside a top
 * page of the same origin; any other subframe only when its origin was approved with `frames`. Pure.
 */
export function frameVerdict(
  sites: readonly ApprovedSite[],
  frame: { origin: string | undefined; frameId: number | undefined; topOrigin: string | null },
): FrameVerdict {
  const site = frame.origin ? sites.find((s) => s.origin === frame.origin) : undefined;
  if (!site) return 'not-approved';
  if (frame.frameId === 0) return 'allowed';
  if (site.frames) return 'allowed';
  return frame.topOrigin !== null && frame.topOrigin === frame.origin ? 'allowed' : 'frame-not-approved';
}

/**
 * A site's origin from what the user typed or a tab's URL: http(s) only, `scheme://host[:port]`; throws
 * ClientError BAD_REQUEST otherwise. Pure.
 */
export function siteOrigin(input: string): string {
  const text = input.trim();
  let url: URL;
  try {
    url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `https://${text}`);
  } catch {
    throw new ClientError('BAD_REQUEST', `not a web address: ${text.slice(0, 200)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new ClientError('BAD_REQUEST', 'only http and https sites can use the avatar camera');
  if (!url.hostname) throw new ClientError('BAD_REQUEST', 'the address names no site');
  return url.origin;
}

/** The media kinds an SDP offer receives (its m-lines). Pure. */
export function offeredKinds(sdp: string): { video: boolean; audio: boolean } {
  return { video: /^m=video /m.test(sdp), audio: /^m=audio /m.test(sdp) };
}

/** One getUserMedia constraint for a kind: `true`, `false`, undefined or MediaTrackConstraints. */
type KindConstraint = boolean | MediaTrackConstraints | undefined;

/** Device ids a `deviceId` constraint names (a string, an array, `{exact}` or `{ideal}`). */
export function namedDeviceIds(c: KindConstraint): string[] {
  if (typeof c !== 'object' || c === null) return [];
  const d = c.deviceId;
  const flat = (v: unknown): string[] =>
    typeof v === 'string' ? [v] : Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
  if (typeof d === 'string' || Array.isArray(d)) return flat(d);
  if (typeof d === 'object' && d !== null) return [...flat(d.exact), ...flat(d.ideal)];
  return [];
}

export interface MediaPlan {
  /** The avatar's video replaces the camera. */
  avatarVideo: boolean;
  /** The avatar's audio replaces the microphone. */
  avatarAudio: boolean;
  /** What still goes to the browser's own getUserMedia, or null when nothing does. */
  real: MediaStreamConstraints | null;
}

/**
 * Decides who serves a getUserMedia call. The avatar camera serves video when the video constraint names its device
 * id; the avatar microphone serves audio when the audio constraint names its id, or when the avatar camera was chosen
 * and the audio constraint names no device (`audio: true`): the voice that matches the avatar's delayed picture.
 * Everything else goes to the browser unchanged. Pure.
 */
export function planGetUserMedia(constraints: MediaStreamConstraints | undefined): MediaPlan {
  const video = constraints?.video;
  const audio = constraints?.audio;
  const avatarVideo = namedDeviceIds(video).includes(AVATAR_CAMERA.deviceId);
  const audioIds = namedDeviceIds(audio);
  const avatarAudio =
    audioIds.includes(AVATAR_MICROPHONE.deviceId) ||
    (avatarVideo && audio !== undefined && audio !== false && audioIds.length === 0);
  const realVideo = !avatarVideo && video !== undefined && video !== false;
  const realAudio = !avatarAudio && audio !== undefined && audio !== false;
  if (!avatarVideo && !avatarAudio) return { avatarVideo, avatarAudio, real: constraints ?? null };
  const real: MediaStreamConstraints | null =
    realVideo || realAudio ? { ...(realVideo ? { video } : {}), ...(realAudio ? { audio } : {}) } : null;
  return { avatarVideo, avatarAudio, real };
}
