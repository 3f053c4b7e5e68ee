/**
 * Private mode through the real server, shared by the integration tests: a performer that publishes only its voice
 * and the expression channel, a sender paced like a camera, and the session's rendered frames.
 */
import type { SessionFrame } from '../../server/avatar/session.js';
import type { Room } from '../../server/rooms/room.js';
import type { SdpResponse } from '../../server/types/protocol.js';
import { PrivatePerformerClient } from '../media/rtcClients.js';
import { lumaMad } from '../media/helpers.js';
import { call, type ClientSocket } from './socket.js';
import type { TrackedClip } from './trackedClip.js';
import { waitFor } from './wait.js';

/**
 * Publishes in private mode on a socket already joined as the performer; resolves once the expression channel is
 * open. The peer is pushed to `peers` (close them before the test process ends).
 */
export async function publishPrivate(
  socket: ClientSocket,
  peers: { close(): void }[],
): Promise<PrivatePerformerClient> {
  const p = new PrivatePerformerClient();
  peers.push(p);
  const pub = await call<SdpResponse>(socket, 'publish', { sdp: await p.offer(), mode: 'private' }, 30_000);
  await p.accept(pub.sdp);
  await waitFor(() => p.channel.readyState === 'open', 20_000, 'the expression channel open');
  p.startAudio();
  return p;
}

/**
 * Sends the clip's tracks at ~30 fps, looping, until `done()` holds (at least one pass of the clip first when `whole`);
 * fails after `timeoutMs`. Paced by the clock (the engine on a busy machine renders far fewer: it drops the rest).
 */
export async function sendUntil(
  p: PrivatePerformerClient,
  clip: TrackedClip,
  done: () => boolean,
  what: string,
  whole = false,
  timeoutMs = 90_000,
): Promise<void> {
  const t0 = performance.now();
  for (let i = 0; ; i++) {
    if ((!whole || i >= clip.tracks.length) && done()) return;
    if (performance.now() - t0 > timeoutMs) throw new Error(`sendUntil: ${what} not met within ${timeoutMs} ms`);
    await waitFor(() => performance.now() - t0 >= i * 33, 5000, 'the next frame time', 2);
    p.sender.send(clip.tracks[i % clip.tracks.length]!, clip.width, clip.height);
  }
}

/** Session frames rendered from the performer (the portrait's idle frame excluded), with their Y plane. */
export function recordFrames(room: Room): { faces: number; lumas: Uint8Array[] } {
  const rec = { faces: 0, lumas: [] as Uint8Array[] };
  room.parts.session.on('frame', (f: SessionFrame) => {
    if (f.stats.face) rec.faces++;
    rec.lumas.push(f.frame.data.slice(0, f.frame.width * f.frame.height));
  });
  return rec;
}

/** The largest mean absolute luma difference of any frame from the first. */
export function maxMadFromFirst(lumas: Uint8Array[]): number {
  const first = lumas[0]!;
  return Math.max(...lumas.map((l) => lumaMad(first, l, first.length)));
}
