/**
 * Transport benchmark: real Chromium → server → real Chromium on loopback, with the diagnostic passthrough engine,
 * so the number is the media path itself (ingest decode, session, publish encode, fan-out, browser decode/render).
 *
 * The fake webcam is a .y4m whose frames carry their index as a 16-block marker (tests/helpers/media.ts). The
 * performer page timestamps each frame index when its local <video> presents it (requestVideoFrameCallback); the
 * viewer page timestamps when it presents the same index. delay = viewer display − performer capture, on one clock
 * (performance.timeOrigin + presentation time, epoch ms). The server's per-stage times come from the Room's 'frame'
 * events (the server runs in this process).
 *
 *   npm run bench -- transport [--seconds 25] [--warmup 4] [--clip man_mouth_wide_open.mp4] [--preview 0|1] [--buffer MS] [--audio 0|1]
 *
 * --preview 1 also runs the studio's own avatar preview (a second viewer: one more server encode); default 0.
 * --buffer MS sets the viewer's receive jitter buffer target (viewer page ?buffer=MS); default: the browser's.
 * --audio 0 makes the viewer receive video only (no audio/video sync in the viewer); default 1.
 *
 * Writes benchmarks/results/transport.json: p50_ms, p95_ms, fps, frames, stages{stage:{p50,p95,mean,n}}, ...
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { AvatarServer } from '../server/app.js';
import type { FrameTimings } from '../server/rooms/room.js';
import { ChromiumBrowser } from '../tests/helpers/chromium.js';
import { drivingClip, makeY4m, portraitFile } from '../tests/helpers/media.js';
import wrtc from '@roamhq/wrtc';
import type { FrameRecord, Probe } from './lib/browserProbe.js';
import { installProbe } from './lib/browserInject.js';
import { collectRtp, type RtpCounters } from './lib/browserRtp.js';
import { startBenchServer } from './lib/server.js';
import { summarize, writeResult } from './lib/stats.js';

type Win = { __probe: Probe; __studio: { publishState: string }; __avatar: { frames: number } };

function arg(args: string[], name: string, fallback: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : fallback;
}

async function until(what: string, cond: () => Promise<boolean> | boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`transport benchmark: ${what} did not happen in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Pairs each viewer frame with the performer's most recent presentation of the same index (the clip loops, so an
 * index repeats every clip length; the most recent one before display is the right one while delay < clip length).
 */
export function matchFrames(
  sent: readonly FrameRecord[],
  shown: readonly FrameRecord[],
  maxDelayMs = 2000,
): { delays: number[]; captureDelays: number[]; unmatched: number } {
  const byMarker = new Map<number, FrameRecord[]>();
  for (const f of sent) {
    if (f.marker === null) continue;
    let list = byMarker.get(f.marker);
    if (!list) byMarker.set(f.marker, (list = []));
    list.push(f);
  }
  const delays: number[] = [];
  const captureDelays: number[] = [];
  let unmatched = 0;
  for (const v of shown) {
    if (v.marker === null) {
      unmatched++;
      continue;
    }
    let best: FrameRecord | null = null;
    for (const s of byMarker.get(v.marker) ?? []) if (s.t <= v.t + 1 && (!best || s.t > best.t)) best = s;
    if (!best || v.t - best.t > maxDelayMs) {
      unmatched++;
      continue;
    }
    delays.push(v.t - best.t);
    if (best.captureT !== null) captureDelays.push(v.t - best.captureT);
  }
  return { delays, captureDelays, unmatched };
}

/** Mean per-frame libwebrtc times (ms) of a video stream between two getStats snapshots (browser or server peer). */
function rtpStages(
  before: RtpCounters[],
  after: RtpCounters[],
  type: RtpCounters['type'],
): Record<string, number> | null {
  const pick = (l: RtpCounters[]): RtpCounters | undefined => l.find((r) => r.type === type && r.kind === 'video');
  const a = pick(before);
  const b = pick(after);
  if (!a || !b) return null;
  const frames = b.frames - a.frames;
  if (frames <= 0) return null;
  const ms = (k: keyof RtpCounters, n = frames): number =>
    +((((b[k] as number) - (a[k] as number)) / n) * 1000).toFixed(2);
  return type === 'outbound-rtp'
    ? { frames, encode_mean_ms: ms('totalEncodeTime') }
    : {
        frames,
        jitter_buffer_mean_ms: ms(
          'jitterBufferDelay',
          b.jitterBufferEmittedCount - a.jitterBufferEmittedCount || frames,
        ),
        decode_mean_ms: ms('totalDecodeTime'),
        receive_to_decoded_mean_ms: ms('totalProcessingDelay'),
      };
}

/**
 * Records every @roamhq/wrtc peer connection the in-process server creates (ingest and viewer peers), so the
 * benchmark can read libwebrtc's own numbers: the ingest's jitter buffer and decode, the publisher's encode.
 * Returns the function that restores the original constructor.
 */
function tapServerPeers(peers: RTCPeerConnection[]): () => void {
  const mod = wrtc as unknown as { RTCPeerConnection: typeof RTCPeerConnection };
  const Native = mod.RTCPeerConnection;
  mod.RTCPeerConnection = class extends Native {
    constructor(config?: RTCConfiguration) {
      super(config);
      peers.push(this);
    }
  };
  return () => {
    mod.RTCPeerConnection = Native;
  };
}

export async function main(args: string[]): Promise<void> {
  const seconds = Number(arg(args, 'seconds', '25'));
  const warmup = Number(arg(args, 'warmup', '4'));
  const clip = drivingClip(arg(args, 'clip', 'man_mouth_wide_open.mp4'));
  const portrait = portraitFile(arg(args, 'portrait', 'real_older_man_glasses.jpg'));
  const preview = arg(args, 'preview', '0') === '1';
  const buffer = arg(args, 'buffer', '');
  const audio = arg(args, 'audio', '1') !== '0';

  const tmp = await mkdtemp(path.join(os.tmpdir(), 'avatar-bench-'));
  let server: AvatarServer | null = null;
  const browsers: ChromiumBrowser[] = [];
  const serverPeers: RTCPeerConnection[] = [];
  const untap = tapServerPeers(serverPeers);
  try {
    const y4m = await makeY4m({
      source: clip,
      width: 640,
      height: 480,
      fps: 30,
      seconds: 10,
      marker: true,
      out: path.join(tmp, 'camera.y4m'),
    });
    server = await startBenchServer(tmp, 'passthrough');
    const url = server.url;

    const form = new FormData();
    form.append('consent', 'true');
    form.append('file', new Blob([await readFile(portrait)]), path.basename(portrait));
    // The bench server keeps the local operator's key (no key configured).
    const authorization = `Bearer ${server.operatorKey}`;
    const up = await fetch(`${url}/api/portraits`, { method: 'POST', body: form, headers: { authorization } });
    if (up.status !== 201) throw new Error(`upload failed: ${up.status} ${await up.text()}`);
    const { id: portraitId } = (await up.json()) as { id: string };
    const rr = await fetch(`${url}/api/rooms`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization },
      body: JSON.stringify({ portraitId }),
    });
    if (rr.status !== 201) throw new Error(`room failed: ${rr.status} ${await rr.text()}`);
    const created = (await rr.json()) as { roomId: string; performerUrl: string; viewerUrl: string };
    const room = server.rooms.get(created.roomId);
    if (!room) throw new Error('room not in the registry');

    const timings: FrameTimings[] = [];
    let recording = false;
    room.on('frame', (t: FrameTimings) => {
      if (recording) timings.push(t);
    });
    let dropped = 0;
    room.on('dropped', (n: number) => {
      if (recording) dropped += n;
    });

    const [perf, view] = await Promise.all([ChromiumBrowser.launch({ fakeVideo: y4m }), ChromiumBrowser.launch()]);
    browsers.push(perf, view);
    await installProbe(perf.page);
    await installProbe(view.page);

    await perf.page.goto(`${created.performerUrl}&preview=${preview ? 1 : 0}`);
    await perf.page.evaluate(() => (window as unknown as Win).__probe.logFrames('#camera', { marker: true }));
    await perf.page.locator('#start:not([disabled])').click();
    await until(
      'performer connected',
      () => perf.page.evaluate(() => (window as unknown as Win).__studio.publishState === 'connected'),
      30_000,
    );

    const viewerUrl = `${created.viewerUrl}${buffer === '' ? '' : `&buffer=${encodeURIComponent(buffer)}`}${audio ? '' : '&audio=0'}`;
    await view.page.goto(viewerUrl);
    await view.page.evaluate(() => (window as unknown as Win).__probe.logFrames('#video', { marker: true }));
    await until(
      'viewer frames',
      () => view.page.evaluate(() => (window as unknown as Win).__avatar.frames > 10),
      30_000,
    );

    // Warm up (encoder ramp-up, jitter buffer settling), then record.
    await new Promise((r) => setTimeout(r, warmup * 1000));
    const rtp = (b: ChromiumBrowser): Promise<RtpCounters[]> =>
      b.page.evaluate(() => (window as unknown as Win).__probe.rtpStats());
    const [perfRtp0, viewRtp0, srvRtp0] = await Promise.all([rtp(perf), rtp(view), collectRtp(serverPeers)]);
    const t0 = Date.now();
    recording = true;
    await new Promise((r) => setTimeout(r, seconds * 1000));
    recording = false;
    const t1 = Date.now();
    const [perfRtp1, viewRtp1, srvRtp1] = await Promise.all([rtp(perf), rtp(view), collectRtp(serverPeers)]);

    const [sent, shown] = await Promise.all([
      perf.page.evaluate(() => (window as unknown as Win).__probe.frames('#camera')),
      view.page.evaluate(() => (window as unknown as Win).__probe.frames('#video')),
    ]);
    const inWindow = shown.filter((f) => f.t >= t0 && f.t <= t1);
    const { delays, captureDelays, unmatched } = matchFrames(sent, inWindow);
    const sentInWindow = sent.filter((f) => f.t >= t0 && f.t <= t1).length;
    const d = summarize(delays);
    const stage = (k: keyof FrameTimings): ReturnType<typeof summarize> =>
      summarize(timings.map((t) => t[k] as number));
    const stages = {
      decode: stage('decodeMs'),
      queue: stage('queueMs'),
      engine: stage('engineMs'),
      publish: stage('publishMs'),
      server_end_to_end: stage('endToEndMs'),
    };
    const windowS = (t1 - t0) / 1000;
    writeResult('transport', {
      description:
        'Chromium fake webcam → server (passthrough engine, direct fan-out) → Chromium viewer, loopback; delay = viewer presentation − performer presentation of the same marked frame',
      machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? 'unknown' },
      seconds: +windowS.toFixed(1),
      options: {
        preview,
        viewerAudio: audio,
        viewerJitterBufferMs: buffer === '' ? 'browser default' : Number(buffer),
      },
      load_average_1m: +os.loadavg()[0]!.toFixed(2),
      p50_ms: d.p50,
      p95_ms: d.p95,
      mean_ms: d.mean,
      fps: +(inWindow.length / windowS).toFixed(1),
      performer_fps: +(sentInWindow / windowS).toFixed(1),
      server_fps: +(timings.length / windowS).toFixed(1),
      frames: {
        shown: inWindow.length,
        matched: delays.length,
        unmatched,
        sent: sentInWindow,
        server: timings.length,
        droppedInMailbox: dropped,
      },
      from_capture_time: captureDelays.length ? summarize(captureDelays) : null,
      stages,
      webrtc_stages: {
        performer_encode: rtpStages(perfRtp0, perfRtp1, 'outbound-rtp'),
        server_ingest_receive: rtpStages(srvRtp0, srvRtp1, 'inbound-rtp'),
        server_publish_encode: rtpStages(srvRtp0, srvRtp1, 'outbound-rtp'),
        viewer_receive: rtpStages(viewRtp0, viewRtp1, 'inbound-rtp'),
      },
      outside_server_p50_ms: +(d.p50 - stages.server_end_to_end.p50).toFixed(1),
      goal: { p95_ms: 100, met: d.p95 <= 100 },
    });
  } finally {
    await Promise.all(browsers.map((b) => b.close()));
    await server?.close();
    untap();
    await rm(tmp, { recursive: true, force: true });
  }
}
