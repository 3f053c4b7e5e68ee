/**
 * WHIP → avatar → WHEP delay: a wrtc WHIP sender (the performer's camera, as OBS or GStreamer would publish) and a
 * wrtc WHEP receiver (a player), both over plain HTTP to a server in this process, with the diagnostic passthrough
 * engine so that the sender's frame marker survives the avatar stage. The sender paints each frame's index into the
 * picture (tests/helpers/media.ts marker) and notes when it handed the frame to its encoder; the receiver notes when
 * it decoded the frame that first shows that index. delay = decoded − sent, one clock (this process). It covers
 * encode, loopback network, server decode, the avatar session, the server's encode for the viewer, and the viewer's
 * decode; no browser render buffers (see `npm run bench -- transport` for Chromium to Chromium).
 *
 *   npm run bench -- whip-whep [--seconds 20] [--warmup 3] [--size 512]
 *
 * Writes benchmarks/results/whip-whep.json: p50_ms/p95_ms of the delay, receive fps, frames, the server's per-stage
 * times (Room 'frame' events: ingest receive → published), dropped frames.
 */
import type { FrameTimings } from '../server/rooms/room.js';
import os from 'node:os';
import { decodeMarker, portraitFile } from '../tests/helpers/media.js';
import { PerformerClient } from '../tests/media/rtcClients.js';
import { waitFor } from '../tests/helpers/wait.js';
import { num, parseOptions } from './lib/args.js';
import { openRoom, startLoopbackServer } from './lib/loopback.js';
import { summarize, writeResult } from './lib/stats.js';
import { CountingViewer } from './lib/viewer.js';

/** The flags (see the header). */
export const OPTIONS = {
  seconds: num(20, { positive: true }),
  warmup: num(3, { positive: true }),
  size: num(512, { positive: true }),
};

async function sdpPost(url: string, token: string, sdp: string): Promise<{ answer: string; location: string }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/sdp', authorization: `Bearer ${token}` },
    body: sdp,
  });
  if (res.status !== 201) throw new Error(`${url}: ${res.status} ${await res.text()}`);
  return { answer: await res.text(), location: res.headers.get('location') ?? '' };
}

export async function main(args: string[]): Promise<void> {
  const { seconds, warmup, size } = parseOptions('whip-whep', args, OPTIONS);
  const loopback = await startLoopbackServer({ overrides: { avatar: { engine: 'passthrough', outputSize: size } } });
  const server = loopback.server;
  const peers: { close(): void }[] = [];
  try {
    const room = await openRoom(loopback.url, loopback.apiKey, portraitFile('real_asian_young_woman.jpg'));
    const info = server.rooms.require(room.roomId).info;

    const sender = new PerformerClient(640, 480, true);
    peers.push(sender);
    const whip = await sdpPost(`${server.url}/whip/${room.roomId}`, room.performerToken, (await sender.offer()).sdp);
    await sender.accept({ type: 'answer', sdp: whip.answer });

    const receiver = new CountingViewer();
    peers.push(receiver);
    let measuring = false;
    let lastIdx = -1;
    const delays: number[] = [];
    let framesIn = 0;
    receiver.onFrame = (f) => {
      if (!measuring || f.width !== info.width) return;
      framesIn++;
      const idx = decodeMarker((fx, fy) => f.data[Math.floor(fy * f.height) * f.width + Math.floor(fx * f.width)]!);
      if (idx === null || idx === lastIdx) return;
      lastIdx = idx;
      const sent = sender.sentAt.get(idx);
      if (sent !== undefined) delays.push(f.at - sent);
    };
    const whep = await sdpPost(`${server.url}/whep/${room.roomId}`, room.viewerToken, (await receiver.offer()).sdp);
    await receiver.accept({ type: 'answer', sdp: whep.answer });

    const stages: FrameTimings[] = [];
    server.rooms.require(room.roomId).on('frame', (t: FrameTimings) => {
      if (measuring) stages.push(t);
    });
    sender.start();
    await waitFor(() => receiver.frames > 10, 20_000, 'first frames at the WHEP receiver', 50);
    await new Promise((r) => setTimeout(r, warmup * 1000));
    const dropped0 = server.rooms.require(room.roomId).parts.session.dropped;
    const sent0 = sender.framesSent;
    measuring = true;
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    measuring = false;
    const elapsed = (performance.now() - t0) / 1000;
    if (delays.length < 10) throw new Error(`whip-whep benchmark: only ${delays.length} marked frames received`);
    const d = summarize(delays);
    const pick = (k: keyof FrameTimings): number[] => stages.map((s) => s[k] as number);

    await fetch(whep.location, { method: 'DELETE', headers: { authorization: `Bearer ${room.viewerToken}` } });
    await fetch(whip.location, { method: 'DELETE', headers: { authorization: `Bearer ${room.performerToken}` } });

    writeResult('whip-whep', {
      what: 'WHIP sender (wrtc) → server (passthrough engine) → WHEP receiver (wrtc), loopback, marked frames',
      engine: 'passthrough',
      output: { width: info.width, height: info.height },
      input: { width: 640, height: 480, fps: 30 },
      seconds: +elapsed.toFixed(1),
      p50_ms: d.p50,
      p95_ms: d.p95,
      delay_ms: d,
      fps_in: +(framesIn / elapsed).toFixed(1),
      fps_sent: +((sender.framesSent - sent0) / elapsed).toFixed(1),
      marked_frames: delays.length,
      dropped_by_session: server.rooms.require(room.roomId).parts.session.dropped - dropped0,
      server_stages_ms: {
        decode: summarize(pick('decodeMs')),
        queue: summarize(pick('queueMs')),
        engine: summarize(pick('engineMs')),
        publish: summarize(pick('publishMs')),
        ingest_to_published: summarize(pick('endToEndMs')),
      },
      cpus: os.cpus().length,
    });
  } finally {
    for (const p of peers) p.close();
    await loopback.close();
  }
}
