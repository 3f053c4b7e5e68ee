/**
 * A viewer process of the fan-out benchmark (forked through benchmarks/lib/child.ts; requests ViewersRequest in
 * fanoutProtocol.ts). Each viewer is a real viewer of the room (benchmarks/lib/viewer.ts): its own socket.io
 * connection joined with the viewer token, and its own @roamhq/wrtc peer connection that receives the room's video,
 * either from the server's direct fan-out ('view' with a recvonly offer) or from mediasoup (sfu:* messages). Viewers
 * receive video only, without a sink: the benchmark is about video frame rate, frames are counted from getStats
 * (inbound-rtp framesReceived and framesDecoded), and no frame is copied into JavaScript; libwebrtc still decodes
 * every received frame, so these viewers decode.
 */
import type { ClientSocket } from '../../tests/helpers/socket.js';
import { ParentChannel, runChild } from './child.js';
import type { ViewerCounters, ViewerMode, ViewersAdded, ViewersRequest, ViewersStats } from './fanoutProtocol.js';
import { CountingViewer, inboundVideo, joinRoom, viewDirect, viewSfu, type SfuViewer } from './viewer.js';

interface Viewer {
  socket: ClientSocket;
  /** The direct peer, or the SFU recv transport (whose stats hold the video). */
  peer: CountingViewer | SfuViewer;
}

const TIMEOUTS = { connectMs: 30_000, joinMs: 60_000, requestMs: 60_000 };

async function addViewer(url: string, token: string, mode: ViewerMode): Promise<Viewer> {
  const { socket, joined } = await joinRoom(url, token, TIMEOUTS);
  let direct: CountingViewer | null = null;
  try {
    if (joined.fanout !== mode) throw new Error(`the room's fan-out is ${joined.fanout}, not ${mode}`);
    if (mode === 'sfu') return { socket, peer: await viewSfu(socket, TIMEOUTS.requestMs) };
    direct = new CountingViewer(false, { audio: false, sink: false });
    await viewDirect(socket, direct, TIMEOUTS.requestMs);
    return { socket, peer: direct };
  } catch (err) {
    direct?.close();
    socket.disconnect();
    throw err;
  }
}

async function counters(v: Viewer): Promise<ViewerCounters> {
  const p = v.peer;
  const connected = p instanceof CountingViewer ? p.pc.connectionState === 'connected' : p.connected;
  return { ...(await inboundVideo(p instanceof CountingViewer ? p.pc : p)), connected };
}

const viewers: Viewer[] = [];

function closeAll(): void {
  for (const v of viewers.splice(0)) {
    v.peer.close();
    v.socket.disconnect();
  }
}

async function add(m: Extract<ViewersRequest, { cmd: 'add' }>): Promise<ViewersAdded> {
  const t0 = performance.now();
  const errors: string[] = [];
  let next = 0;
  let connected = 0;
  const lane = async (): Promise<void> => {
    while (next < m.count) {
      next++;
      try {
        viewers.push(await addViewer(m.url, m.token, m.mode));
        connected++;
      } catch (err) {
        errors.push(err instanceof Error ? err.message : String(err));
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, m.parallel) }, lane));
  return { connected, failed: errors.length, errors: [...new Set(errors)], ms: performance.now() - t0 };
}

async function handle(m: ViewersRequest): Promise<ViewersAdded | ViewersStats | null> {
  switch (m.cmd) {
    case 'add':
      return add(m);
    case 'stats':
      return { at: Date.now(), viewers: await Promise.all(viewers.map(counters)) };
    case 'close':
      closeAll();
      return null;
  }
}

runChild('fanout viewers', () => {
  const parent = new ParentChannel<ViewersRequest, null>(handle);
  parent.onStop('fanout viewers', async () => {
    closeAll();
    // Let the peers' closing finish in wrtc's threads before the explicit exit.
    await new Promise((r) => setTimeout(r, 200));
  });
  parent.ready(null);
  return Promise.resolve();
});
