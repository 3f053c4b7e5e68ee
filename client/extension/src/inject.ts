/**
 * MAIN-world content script, run at document_start in every frame: while the performer is signed in (extension
 * popup), `navigator.mediaDevices.enumerateDevices()` also lists the avatar camera ("Live Avatar (AI avatar camera)")
 * and the avatar microphone, and `getUserMedia` serves them with the room's avatar stream (getAvatarStream, its WHEP
 * exchange relayed through the extension). Every other device and request goes to the browser unchanged.
 *
 * A page gets the avatar devices only with the browser's camera/microphone permission, as any camera.
 *
 * The page can see this script's messages (it runs in the page's world): they carry SDP and the signed-in room's id,
 * never the token.
 */
import { getAvatarStream, type AvatarSource, type WhepTransport } from '../../lib/avatarStream.js';
import { ClientError } from '../../lib/errors.js';
import {
  AVATAR_CAMERA,
  AVATAR_MICROPHONE,
  PAGE_CHANNEL,
  planGetUserMedia,
  type AvatarStatus,
  type OfferReply,
  type PageMessage,
  type PageRequest,
  type Reply,
} from './protocol.js';

type EnumerateDevices = (this: MediaDevices) => Promise<MediaDeviceInfo[]>;
type GetUserMedia = (this: MediaDevices, c?: MediaStreamConstraints) => Promise<MediaStream>;

const STATUS_TIMEOUT_MS = 1500;
const OFFER_TIMEOUT_MS = 20_000;

let nextId = 1;
const pending = new Map<number, (r: Reply<unknown>) => void>();
let status: AvatarStatus = { signedIn: false };
/** The first status answer (the bridge runs at document_start too, so this is quick). */
let statusReady: Promise<void>;

function request<T>(req: PageRequest, timeoutMs: number): Promise<T> {
  const id = nextId++;
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      pending.delete(id);
      reject(new ClientError('TIMEOUT', 'the Live Avatar extension did not answer'));
    }, timeoutMs);
    pending.set(id, (r) => {
      clearTimeout(timer);
      pending.delete(id);
      if (r.ok) resolve(r.data as T);
      else
        reject(
          new ClientError(
            r.error.code as ClientError['code'],
            r.error.message,
            r.error.status ? { status: r.error.status } : undefined,
          ),
        );
    });
    window.postMessage({ channel: PAGE_CHANNEL, dir: 'to-extension', id, request: req } satisfies PageMessage, '*');
  });
}

function onMessage(e: MessageEvent<unknown>): void {
  if (e.source !== window || typeof e.data !== 'object' || e.data === null) return;
  const m = e.data as Partial<PageMessage> & { reply?: Reply<unknown>; status?: AvatarStatus };
  if (m.channel !== PAGE_CHANNEL || m.dir !== 'to-page') return;
  if (m.id === 0 && m.status) {
    const changed = m.status.signedIn !== status.signedIn || m.status.room !== status.room;
    status = m.status;
    // Meeting apps refresh their camera list on 'devicechange'.
    if (changed) navigator.mediaDevices?.dispatchEvent(new Event('devicechange'));
  } else if (typeof m.id === 'number' && m.reply) {
    pending.get(m.id)?.(m.reply);
  }
}

/** The WHEP exchange through the extension (the service worker adds the room token). */
const relay: WhepTransport = {
  offer: (_source, sdp) => request<OfferReply>({ type: 'offer', sdp }, OFFER_TIMEOUT_MS),
  end: (_source, resource) => request<null>({ type: 'end', resource }, OFFER_TIMEOUT_MS).then(() => undefined),
};

/** A device entry that behaves like the browser's own (a plain object can't be a real MediaDeviceInfo). */
function deviceInfo(d: typeof AVATAR_CAMERA | typeof AVATAR_MICROPHONE): MediaDeviceInfo {
  const proto =
    d.kind === 'videoinput' && typeof InputDeviceInfo !== 'undefined'
      ? InputDeviceInfo.prototype
      : MediaDeviceInfo.prototype;
  const info = Object.create(proto) as MediaDeviceInfo;
  const json = { deviceId: d.deviceId, groupId: d.groupId, kind: d.kind, label: d.label };
  for (const [k, v] of Object.entries(json)) Object.defineProperty(info, k, { value: v, enumerable: true });
  Object.defineProperty(info, 'toJSON', { value: () => ({ ...json }) });
  Object.defineProperty(info, 'getCapabilities', { value: () => ({ deviceId: d.deviceId, groupId: d.groupId }) });
  return info;
}

/** Makes an avatar track say what it is: its label, and its device in getSettings(). */
function dress(track: MediaStreamTrack): void {
  const d = track.kind === 'video' ? AVATAR_CAMERA : AVATAR_MICROPHONE;
  const settings = track.getSettings.bind(track);
  Object.defineProperty(track, 'label', { value: d.label });
  Object.defineProperty(track, 'getSettings', {
    value: () => ({ ...settings(), deviceId: d.deviceId, groupId: d.groupId }),
  });
}

/** What a page expects from getUserMedia's failures: DOMExceptions with the standard names. */
function asDomException(err: unknown): DOMException {
  if (err instanceof DOMException) return err;
  const e = err instanceof ClientError ? err : new ClientError('INTERNAL', String(err));
  const name =
    e.code === 'TOKEN_INVALID' || e.code === 'TOKEN_EXPIRED' || e.code === 'FORBIDDEN'
      ? 'NotAllowedError'
      : e.code === 'ROOM_NOT_FOUND'
        ? 'NotFoundError'
        : 'NotReadableError';
  return new DOMException(`Live Avatar: ${e.message} (${e.code})`, name);
}

/**
 * The avatar is a camera and its voice a microphone: a page gets them only with the browser's own permission for
 * that kind of device, as for any other. Without it yet, the browser asks (its usual prompt) through a real request
 * whose tracks are stopped at once; a refusal fails the call with the browser's NotAllowedError.
 */
async function ensurePermission(md: MediaDevices, gum: GetUserMedia, video: boolean, audio: boolean): Promise<void> {
  const state = (name: string): Promise<string> =>
    navigator.permissions.query({ name: name as PermissionName }).then(
      (s) => s.state,
      () => 'prompt',
    );
  const needVideo = video && (await state('camera')) !== 'granted';
  const needAudio = audio && (await state('microphone')) !== 'granted';
  if (!needVideo && !needAudio) return;
  let s: MediaStream;
  try {
    s = await gum.call(md, { video: needVideo, audio: needAudio });
  } catch (err) {
    // A machine without a real camera/microphone has no permission to ask for (the browser refuses before any
    // prompt): the page's own choice of the avatar device is the consent there. A refusal still fails the call.
    if (err instanceof DOMException && err.name === 'NotFoundError') return;
    throw err;
  }
  for (const t of s.getTracks()) t.stop();
}

function install(): void {
  if (typeof MediaDevices === 'undefined') return;
  const proto = MediaDevices.prototype;
  const enumerate = Object.getOwnPropertyDescriptor(proto, 'enumerateDevices')?.value as EnumerateDevices | undefined;
  const gum = Object.getOwnPropertyDescriptor(proto, 'getUserMedia')?.value as GetUserMedia | undefined;
  if (!enumerate || !gum) return;

  window.addEventListener('message', onMessage);
  statusReady = request<AvatarStatus>({ type: 'status' }, STATUS_TIMEOUT_MS).then(
    (s) => {
      status = s;
    },
    () => {
      // No bridge in this frame (a sandboxed frame): no avatar devices here.
    },
  );

  Object.defineProperty(proto, 'enumerateDevices', {
    configurable: true,
    writable: true,
    value: async function enumerateDevices(this: MediaDevices): Promise<MediaDeviceInfo[]> {
      const real = await enumerate.call(this);
      await statusReady;
      return status.signedIn ? [...real, deviceInfo(AVATAR_CAMERA), deviceInfo(AVATAR_MICROPHONE)] : real;
    },
  });

  Object.defineProperty(proto, 'getUserMedia', {
    configurable: true,
    writable: true,
    value: async function getUserMedia(this: MediaDevices, constraints?: MediaStreamConstraints): Promise<MediaStream> {
      const plan = planGetUserMedia(constraints);
      if (!plan.avatarVideo && !plan.avatarAudio) return gum.call(this, constraints);
      await statusReady;
      if (!status.signedIn || !status.server || !status.room) {
        throw new DOMException('Live Avatar: not signed in (open the Live Avatar extension)', 'NotFoundError');
      }
      await ensurePermission(this, gum, plan.avatarVideo, plan.avatarAudio);
      // The token stays in the extension: the relay's service worker adds it.
      const source: AvatarSource = { server: status.server, room: status.room, token: 'held-by-the-extension' };
      let avatar: MediaStream;
      try {
        avatar = await getAvatarStream(source, { audio: plan.avatarAudio, transport: relay });
      } catch (err) {
        throw asDomException(err);
      }
      let real: MediaStream | null = null;
      if (plan.real) {
        try {
          real = await gum.call(this, plan.real);
        } catch (err) {
          for (const t of avatar.getTracks()) t.stop();
          throw err;
        }
      }
      const out = new MediaStream();
      for (const t of avatar.getTracks()) {
        const wanted = t.kind === 'video' ? plan.avatarVideo : plan.avatarAudio;
        if (!wanted) {
          // The server always sends video; an avatar-microphone-only request does not keep it.
          t.stop();
          continue;
        }
        dress(t);
        out.addTrack(t);
      }
      for (const t of real?.getTracks() ?? []) out.addTrack(t);
      return out;
    },
  });
}

install();
