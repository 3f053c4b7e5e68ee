/**
 * What the extension's parts say to each other, and the pure logic of the virtual devices.
 *
 * The parts: `inject` (the page's MAIN world: patches navigator.mediaDevices), `bridge` (an isolated-world content
 * script: relays between the page and the extension), `background` (the service worker: holds the room token, talks to
 * the avatar server), `popup` (sign in / sign out). The room token never enters a page: the page only learns whether
 * an avatar is available and sends SDP through the bridge; the service worker adds the token.
 */

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

/** The signed-in state a page may know: no token. */
export interface AvatarStatus {
  signedIn: boolean;
  /** Server origin and room, when signed in. */
  server?: string;
  room?: string;
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

/** Page ⇄ bridge messages travel with window.postMessage under this tag. */
export const PAGE_CHANNEL = 'live-avatar-extension';

export type PageRequest = { type: 'status' } | { type: 'offer'; sdp: string } | { type: 'end'; resource: string };

export type PageMessage =
  | { channel: typeof PAGE_CHANNEL; dir: 'to-extension'; id: number; request: PageRequest }
  | { channel: typeof PAGE_CHANNEL; dir: 'to-page'; id: number; reply: Reply<unknown> }
  | { channel: typeof PAGE_CHANNEL; dir: 'to-page'; id: 0; status: AvatarStatus };

export interface WireError {
  code: string;
  message: string;
  status?: number;
}
export type Reply<T> = { ok: true; data: T } | { ok: false; error: WireError };

/** Bridge/popup → service worker (chrome.runtime.sendMessage). */
export type WorkerRequest =
  | { type: 'status' }
  | { type: 'offer'; sdp: string }
  | { type: 'end'; resource: string }
  | { type: 'signIn'; link: string }
  | { type: 'signOut' };

export interface OfferReply {
  answer: string;
  resource: string;
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
