/**
 * MAIN-world content script, run at document_start in every frame: where the user approved the site (extension
 * popup) and is signed in, `navigator.mediaDevices.enumerateDevices()` also lists the avatar camera ("Live Avatar (AI
 * avatar camera)") and the avatar microphone, and `getUserMedia` serves them with the room's avatar stream
 * (getAvatarStream, its WHEP exchange relayed through the extension). Every other device and request goes to the
 * browser unchanged.
 *
 * Elsewhere the page sees the browser's own functions: the patch is in place only until the extension says the frame
 * may not use the avatar (a few milliseconds after document_start), then the original functions are put back. That
 * short window is the one trace the extension leaves on a page it does not serve: it must patch before the page's
 * first script and cannot know the answer by then.
 *
 * This script runs in the page's world, so the page can watch and change everything it does: it talks to the bridge
 * only over the keyed event channel on a node the page never sees, set up before the page has any script (protocol.ts
 * HELLO_INJECT), with the browser functions it needs taken at that moment, and holds nothing the page must not have (no token, server, room
 * or session address). The checks that matter (approved site and frame, the browser's camera permission) are made
 * by the bridge and the service worker, out of the page's reach.
 */
import { getAvatarStream, type AvatarSource, type WhepTransport } from '../../lib/avatarStream.js';
import { ClientError } from '../../lib/errors.js';
import {
  AVATAR_CAMERA,
  AVATAR_MICROPHONE,
  HELLO_BRIDGE,
  HELLO_INJECT,
  channelEvents,
  planGetUserMedia,
  type PageMessage,
  type PageOfferReply,
  type PageRequest,
  type PageStatus,
  type Reply,
} from './protocol.js';

type EnumerateDevices = (this: MediaDevices) => Promise<MediaDeviceInfo[]>;
type GetUserMedia = (this: MediaDevices, c?: MediaStreamConstraints) => Promise<MediaStream>;

// The browser's functions as they are before any page script could replace them.
const apply = Reflect.apply;
const doc = document;
const native = <T>(o: object, key: string): T => Object.getOwnPropertyDescriptor(o, key)?.value as T;
type Listen = (this: EventTarget, type: string, fn: (e: Event) => void) => void;
const addListener = native<Listen>(EventTarget.prototype, 'addEventListener');
const removeListener = native<Listen>(EventTarget.prototype, 'removeEventListener');
const dispatch = native<(this: EventTarget, e: Event) => boolean>(EventTarget.prototype, 'dispatchEvent');
const appendChild = native<(this: Node, n: Node) => Node>(Node.prototype, 'appendChild');
const removeChild = native<(this: Node, n: Node) => Node>(Node.prototype, 'removeChild');
/** The channel's node: the bridge and this script hold it; the page never sees it (see protocol.ts HELLO_INJECT). */
const channel = doc.createElement('span');
const NativeCustomEvent = CustomEvent;
const detailDesc = Object.getOwnPropertyDescriptor(CustomEvent.prototype, 'detail');
const detailOf = (detailDesc ? Reflect.get(detailDesc, 'get') : undefined) as ((this: Event) => unknown) | undefined;
const toJson = native<(v: unknown) => string>(JSON, 'stringify');
const fromJson = native<(s: string) => unknown>(JSON, 'parse');

const STATUS_TIMEOUT_MS = 1500;
const OFFER_TIMEOUT_MS = 20_000;

let events: { up: string; down: string } | null = null;
/** Called once the bridge's key is here (the bridge may run just after this script). */
let onKey: () => void = () => undefined;
let nextId = 1;
const pending = new Map<number, (r: Reply<unknown>) => void>();
let status: PageStatus = { available: false };
/** The first status answer (the bridge runs at document_start too, so this is quick). */
let statusReady: Promise<void> = Promise.resolve();

function send(type: string, detail: string): void {
  apply(dispatch, channel, [new NativeCustomEvent(type, { __proto__: null, detail } as CustomEventInit<string>)]);
}

/** Says hello from the channel's node, attached to the document for just that dispatch. */
function hello(): void {
  const root = doc.documentElement;
  if (!root) return;
  apply(appendChild, root, [channel]);
  const init = { __proto__: null, bubbles: true, detail: 'hello' } as CustomEventInit<string>;
  apply(dispatch, channel, [new NativeCustomEvent(HELLO_INJECT, init)]);
  apply(removeChild, root, [channel]);
}

function request<T>(req: PageRequest, timeoutMs: number): Promise<T> {
  const ev = events;
  if (!ev) return Promise.reject(new ClientError('INTERNAL', 'the Live Avatar extension is not in this frame'));
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
      else if (r.error.domName) reject(new DOMException(`Live Avatar: ${r.error.message}`, r.error.domName));
      else
        reject(
          new ClientError(
            r.error.code as ClientError['code'],
            r.error.message,
            r.error.status ? { status: r.error.status } : undefined,
          ),
        );
    });
    send(ev.up, toJson({ dir: 'up', id, request: req } satisfies PageMessage));
  });
}

let onStatusChange: (available: boolean) => void = () => undefined;

function onDown(e: Event): void {
  const detail = detailOf ? apply(detailOf, e, []) : null;
  if (typeof detail !== 'string') return;
  const m = fromJson(detail) as Partial<{ id: number; reply: Reply<unknown>; status: PageStatus }>;
  if (m.id === 0 && m.status) {
    const changed = m.status.available !== status.available;
    status = { available: m.status.available === true };
    if (changed) onStatusChange(status.available);
  } else if (typeof m.id === 'number' && m.reply) {
    pending.get(m.id)?.(m.reply);
  }
}

/** The bridge announces itself after this script ran: hello again. */
function onReady(e: Event): void {
  if (!events && detailOf && apply(detailOf, e, []) === 'ready') hello();
}

/** Takes the bridge's key, sent on the channel's node (see protocol.ts HELLO_INJECT). */
function onKeyEvent(e: Event): void {
  const detail = detailOf ? apply(detailOf, e, []) : null;
  if (typeof detail !== 'string' || events) return;
  apply(removeListener, doc, [HELLO_BRIDGE, onReady]);
  apply(removeListener, channel, [HELLO_BRIDGE, onKeyEvent]);
  events = channelEvents(detail);
  apply(addListener, channel, [events.down, onDown]);
  onKey();
}

/** The WHEP exchange through the extension (the service worker adds the room token). */
const relay: WhepTransport = {
  offer: (_source, sdp) =>
    request<PageOfferReply>({ type: 'offer', sdp }, OFFER_TIMEOUT_MS).then((r) => ({
      answer: r.answer,
      resource: r.handle,
    })),
  end: (_source, handle) => request<null>({ type: 'end', handle }, OFFER_TIMEOUT_MS).then(() => undefined),
};
/** The relay ignores the source: the link stays in the extension. */
const HIDDEN_SOURCE: AvatarSource = {
  server: 'https://live-avatar.invalid',
  room: 'avatar',
  token: 'in-the-extension',
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
  // The browser's own refusal (the camera permission, asked by the bridge), wrapped by getAvatarStream.
  if (err instanceof ClientError && err.cause instanceof DOMException) return err.cause;
  const e = err instanceof ClientError ? err : new ClientError('INTERNAL', String(err));
  const name =
    e.code === 'TOKEN_INVALID' || e.code === 'TOKEN_EXPIRED' || e.code === 'FORBIDDEN'
      ? 'NotAllowedError'
      : e.code === 'ROOM_NOT_FOUND'
        ? 'NotFoundError'
        : 'NotReadableError';
  return new DOMException(`Live Avatar: ${e.message} (${e.code})`, name);
}

function install(): void {
  if (typeof MediaDevices === 'undefined') return;
  const proto = MediaDevices.prototype;
  const enumerateDesc = Object.getOwnPropertyDescriptor(proto, 'enumerateDevices');
  const gumDesc = Object.getOwnPropertyDescriptor(proto, 'getUserMedia');
  const enumerate = enumerateDesc?.value as EnumerateDevices | undefined;
  const gum = gumDesc?.value as GetUserMedia | undefined;
  if (!enumerateDesc || !gumDesc || !enumerate || !gum) return;

  const keyed = new Promise<void>((resolve) => {
    onKey = resolve;
    setTimeout(resolve, STATUS_TIMEOUT_MS);
  });
  apply(addListener, channel, [HELLO_BRIDGE, onKeyEvent]);
  apply(addListener, doc, [HELLO_BRIDGE, onReady]);
  hello();

  const enumerateDevices = async function enumerateDevices(this: MediaDevices): Promise<MediaDeviceInfo[]> {
    const real = await apply(enumerate, this, []);
    await statusReady;
    return status.available ? [...real, deviceInfo(AVATAR_CAMERA), deviceInfo(AVATAR_MICROPHONE)] : real;
  };
  const getUserMedia = async function getUserMedia(
    this: MediaDevices,
    constraints?: MediaStreamConstraints,
  ): Promise<MediaStream> {
    const plan = planGetUserMedia(constraints);
    if (!plan.avatarVideo && !plan.avatarAudio) return apply(gum, this, [constraints]);
    await statusReady;
    // Not here for this page: exactly what the browser says for a device it does not have.
    if (!status.available) return apply(gum, this, [constraints]);
    // The token stays in the extension; the bridge asks the browser's camera permission before it relays.
    let avatar: MediaStream;
    try {
      avatar = await getAvatarStream(HIDDEN_SOURCE, { audio: plan.avatarAudio, transport: relay });
    } catch (err) {
      throw asDomException(err);
    }
    let real: MediaStream | null = null;
    if (plan.real) {
      try {
        real = await apply(gum, this, [plan.real]);
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
  };
  const patch = (on: boolean): void => {
    Object.defineProperty(
      proto,
      'enumerateDevices',
      on ? { ...enumerateDesc, value: enumerateDevices } : enumerateDesc,
    );
    Object.defineProperty(proto, 'getUserMedia', on ? { ...gumDesc, value: getUserMedia } : gumDesc);
  };
  patch(true);
  onStatusChange = (available) => {
    patch(available);
    // Meeting apps refresh their camera list on 'devicechange'.
    navigator.mediaDevices?.dispatchEvent(new Event('devicechange'));
  };
  statusReady = keyed
    .then(() => request<PageStatus>({ type: 'status' }, STATUS_TIMEOUT_MS))
    .then(
      (s) => {
        status = { available: s.available === true };
      },
      () => {
        // No bridge in this frame (a sandboxed frame): no avatar devices here.
      },
    );
  void statusReady.then(() => {
    if (!status.available) patch(false);
  });
}

install();
