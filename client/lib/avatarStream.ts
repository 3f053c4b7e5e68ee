/**
 * getAvatarStream: the live avatar of a room as a plain MediaStream, for any web app to show or to publish (a meeting
 * app's own RTCPeerConnection, a MediaRecorder, a canvas).
 *
 * ```ts
 * import { getAvatarStream, stopAvatarStream } from './lib/avatarStream.js';
 * const stream = await getAvatarStream('https://avatar.example/view?room=ROOM&token=VIEWER_TOKEN');
 * video.srcObject = stream;                       // or: pc.addTrack(track, stream) for every track
 * // ... later: stopping every track (or stopAvatarStream(stream)) ends the server session.
 * stopAvatarStream(stream);
 * ```
 *
 * It is a WHEP client (POST /whep/:roomId with the room's viewer token, server/http/whip.ts): one recvonly peer
 * connection, its offer sent complete (the server does not take trickled candidates). The stream carries the avatar's
 * video and, unless `audio: false`, the performer's voice delayed to match the video. Nothing is re-encoded or
 * redrawn here: the frames, the visible "AI avatar" mark included, are the server's.
 *
 * When the connection fails or the server ends the session, every track of the stream fires 'ended' (as a camera that
 * was unplugged does), so apps that watch their camera notice.
 */
import { ClientError, type ClientErrorCode } from './errors.js';

/** Where the avatar is: the server's origin, the room and a token of that room (viewer or performer). */
export interface AvatarSource {
  /** Server origin, e.g. 'https://avatar.example'. */
  server: string;
  room: string;
  token: string;
}

/** A viewer link as the studio's **Copy** gives it (`<origin>/view?room=R&token=T`), or its parts. */
export type AvatarLink = string | AvatarSource;

/** One WHEP exchange, replaceable (the browser extension relays it through its service worker). */
export interface WhepTransport {
  /** POSTs the offer; resolves with the answer and the session's resource URL. @throws ClientError */
  offer(source: AvatarSource, offerSdp: string): Promise<{ answer: string; resource: string }>;
  /** DELETEs the session's resource. @throws ClientError */
  end(source: AvatarSource, resource: string): Promise<void>;
}

export interface AvatarStreamOptions {
  /** Receive the performer's delayed voice too; default true. */
  audio?: boolean;
  /** STUN/TURN servers for this peer; default none (the server is reached directly). */
  iceServers?: RTCIceServer[];
  /** How long ICE gathering may take before the offer is sent with the candidates found so far; default 2 s. */
  gatherTimeoutMs?: number;
  /** How long the connection may take to carry media; default 15 s. */
  connectTimeoutMs?: number;
  /** Aborting closes the stream (before or after it resolved). */
  signal?: AbortSignal;
  /** Errors that happen after the stream resolved (ending the session on the server), reported, never thrown. */
  onError?: (err: ClientError) => void;
  /** The WHEP exchange; default fetch to the server named by the link. */
  transport?: WhepTransport;
}

/**
 * Parses a viewer link (or a performer link: any link with `room` and `token`) into its parts. Relative links are
 * resolved against `base` (default: the page's location).
 * @throws ClientError('BAD_REQUEST') when it names no room or token, or is not an http(s) URL.
 */
export function parseAvatarLink(link: AvatarLink, base?: string): AvatarSource {
  if (typeof link !== 'string') {
    if (!link || !link.server || !link.room || !link.token) {
      throw new ClientError('BAD_REQUEST', 'an avatar source needs server, room and token');
    }
    return { server: new URL(link.server).origin, room: link.room, token: link.token };
  }
  let u: URL;
  try {
    u = new URL(link.trim(), base ?? (typeof location !== 'undefined' ? location.href : undefined));
  } catch (err) {
    throw new ClientError('BAD_REQUEST', 'not a link: paste the viewer link from the studio', { cause: err });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    throw new ClientError('BAD_REQUEST', 'the link must be http(s)');
  const room = u.searchParams.get('room');
  const token = u.searchParams.get('token');
  if (!room || !token)
    throw new ClientError('BAD_REQUEST', 'the link has no room or token: paste the viewer link from the studio');
  return { server: u.origin, room, token };
}

/** The WHEP endpoint of a source. */
export function whepEndpoint(s: AvatarSource): string {
  return `${s.server}/whep/${encodeURIComponent(s.room)}`;
}

async function errorOf(res: Response): Promise<ClientError> {
  let code: ClientErrorCode = 'INTERNAL';
  let message = `HTTP ${res.status}`;
  try {
    const body = (await res.json()) as { code?: unknown; message?: unknown };
    if (typeof body.code === 'string') code = body.code as ClientErrorCode;
    if (typeof body.message === 'string') message = body.message;
  } catch {
    // Not our JSON error body (a proxy's page): the status says enough.
  }
  return new ClientError(code, message, { status: res.status });
}

/** The default transport: fetch straight to the server (its WHEP routes allow any origin). */
export const fetchWhepTransport: WhepTransport = {
  async offer(source, offerSdp) {
    let res: Response;
    try {
      res = await fetch(whepEndpoint(source), {
        method: 'POST',
        headers: { 'content-type': 'application/sdp', authorization: `Bearer ${source.token}` },
        body: offerSdp,
      });
    } catch (err) {
      throw new ClientError('NETWORK', 'the avatar server cannot be reached', { cause: err });
    }
    if (res.status !== 201) throw await errorOf(res);
    const location = res.headers.get('location');
    if (!location) throw new ClientError('INTERNAL', 'the server answered without a session Location');
    return { answer: await res.text(), resource: new URL(location, whepEndpoint(source)).toString() };
  },
  async end(source, resource) {
    let res: Response;
    try {
      res = await fetch(resource, { method: 'DELETE', headers: { authorization: `Bearer ${source.token}` } });
    } catch (err) {
      throw new ClientError('NETWORK', 'the avatar server cannot be reached', { cause: err });
    }
    // 404: the session had already ended on the server (room closed, peer gone): nothing left to end.
    if (!res.ok && res.status !== 404) throw await errorOf(res);
  },
};

function waitGathering(pc: RTCPeerConnection, timeoutMs: number): Promise<void> {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = (): void => {
      if (pc.iceGatheringState === 'complete') done();
    };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/** What ties a stream returned by getAvatarStream to its peer connection. */
const sessions = new WeakMap<MediaStream, () => void>();

/**
 * Connects to a room's avatar and resolves with its MediaStream once media flow.
 * @throws ClientError: BAD_REQUEST (a bad link), the server's codes (TOKEN_INVALID, TOKEN_EXPIRED, FORBIDDEN,
 * ROOM_NOT_FOUND, ...), NETWORK, TIMEOUT (no media within connectTimeoutMs), MEDIA (the connection failed), CLOSED
 * (aborted).
 */
export async function getAvatarStream(link: AvatarLink, options: AvatarStreamOptions = {}): Promise<MediaStream> {
  const source = parseAvatarLink(link);
  const transport = options.transport ?? fetchWhepTransport;
  const wantAudio = options.audio ?? true;
  if (options.signal?.aborted) throw new ClientError('CLOSED', 'aborted');

  const pc = new RTCPeerConnection({ iceServers: options.iceServers ?? [], bundlePolicy: 'max-bundle' });
  const stream = new MediaStream();
  pc.addTransceiver('video', { direction: 'recvonly' });
  if (wantAudio) pc.addTransceiver('audio', { direction: 'recvonly' });
  pc.ontrack = (e) => {
    if (!stream.getTracks().includes(e.track)) stream.addTrack(e.track);
  };

  // The native stop, kept before the tracks' own stop is wrapped below.
  const stopTrack = Object.getOwnPropertyDescriptor(MediaStreamTrack.prototype, 'stop')?.value as (
    this: MediaStreamTrack,
  ) => void;
  let resource: string | null = null;
  let closed = false;
  const report = (err: unknown): void => {
    const e = err instanceof ClientError ? err : new ClientError('INTERNAL', String(err), { cause: err });
    options.onError?.(e);
  };
  /** Closes the peer, ends the server session, and (when `ended`) tells the stream's users its tracks ended. */
  const close = (ended: boolean): void => {
    if (closed) return;
    closed = true;
    options.signal?.removeEventListener('abort', onAbort);
    pc.close();
    for (const t of stream.getTracks()) {
      if (t.readyState === 'live') stopTrack.call(t);
      if (ended) t.dispatchEvent(new Event('ended'));
    }
    if (resource) transport.end(source, resource).catch(report);
  };
  const onAbort = (): void => close(true);
  options.signal?.addEventListener('abort', onAbort);

  try {
    await pc.setLocalDescription(await pc.createOffer());
    await waitGathering(pc, options.gatherTimeoutMs ?? 2000);
    if (closed) throw new ClientError('CLOSED', 'aborted');
    const ex = await transport.offer(source, pc.localDescription?.sdp ?? '');
    resource = ex.resource;
    if (closed) throw new ClientError('CLOSED', 'aborted');
    try {
      await pc.setRemoteDescription({ type: 'answer', sdp: ex.answer });
    } catch (err) {
      throw new ClientError('MEDIA', 'the server answer was refused by the browser', { cause: err });
    }
    await connected(pc, options.connectTimeoutMs ?? 15_000, () => closed);
  } catch (err) {
    close(false);
    throw err instanceof ClientError
      ? err
      : new ClientError('MEDIA', 'the avatar stream could not start', { cause: err });
  }

  pc.addEventListener('connectionstatechange', () => {
    if (pc.connectionState === 'failed' || pc.connectionState === 'closed') close(true);
  });
  // Stopping every track ends the session: apps stop their camera tracks, they do not know about peers.
  for (const t of stream.getTracks()) {
    t.stop = function stop(this: MediaStreamTrack): void {
      stopTrack.call(this);
      if (stream.getTracks().every((x) => x.readyState === 'ended')) close(false);
    };
  }
  sessions.set(stream, () => close(false));
  return stream;
}

/** Resolves when the peer is connected, rejects on failure, timeout or close. */
function connected(pc: RTCPeerConnection, timeoutMs: number, isClosed: () => boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    const finish = (err?: ClientError): void => {
      clearTimeout(timer);
      pc.removeEventListener('connectionstatechange', check);
      if (err) reject(err);
      else resolve();
    };
    const check = (): void => {
      if (isClosed()) finish(new ClientError('CLOSED', 'aborted'));
      else if (pc.connectionState === 'connected') finish();
      else if (pc.connectionState === 'failed' || pc.connectionState === 'closed') {
        finish(new ClientError('MEDIA', 'the connection to the avatar server failed'));
      }
    };
    const timer = setTimeout(
      () => finish(new ClientError('TIMEOUT', `no avatar media within ${timeoutMs} ms`)),
      timeoutMs,
    );
    pc.addEventListener('connectionstatechange', check);
    check();
  });
}

/** Stops a stream from getAvatarStream and ends its server session (no-op for other streams or a second call). */
export function stopAvatarStream(stream: MediaStream): void {
  const close = sessions.get(stream);
  sessions.delete(stream);
  close?.();
}
