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
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { FrameTimings } from '../server/rooms/room.js';
import { ChromiumBrowser } from '../tests/helpers/chromium.js';
import { drivingClip, makeY4m, portraitFile } from '../tests/helpers/media.js';
import { waitFor } from '../tests/helpers/wait.js';
import { num, parseOptions, str } from './lib/args.js';
import type { FrameRecord, Probe } from './lib/browserProbe.js';
import { installProbe } from './lib/browserInject.js';
import { collectRtp, type RtpCounters } from './lib/browserRtp.js';
import { rtpStages, tapServerPeers } from './lib/g2gRtp.js';
import { RoomRecorder, openRoom, startLoopbackServer, type LoopbackServer } from './lib/loopback.js';
import { summarize, writeResult } from './lib/stats.js';

type Win = { __probe: Probe; __studio: { publishState: string }; __avatar: { frames: number } };

/** The flags (see the header). */
export const OPTIONS = {
  seconds: num(25, { min: 1 }),
  warmup: num(4, { min: 0 }),
  clip: str('man_mouth_wide_open.mp4'),
  portrait: str('real_older_man_glasses.jpg'),
  preview: str('0', ['0', '1']),
  buffer: str(''),
  audio: str('1', ['0', '1']),
};

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

export async function main(args: string[]): Promise<void> {
  const o = parseOptions('transport', args, OPTIONS);
  const { seconds, warmup, buffer } = o;
  const clip = drivingClip(o.clip);
  const portrait = portraitFile(o.portrait);
  const preview = o.preview === '1';
  const audio = o.audio !== '0';

  const tmp = await mkdtemp(path.join(os.tmpdir(), 'avatar-bench-'));
  let loopback: LoopbackServer | null = null;
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
    loopback = await startLoopbackServer({ overrides: { avatar: { engine: 'passthrough' } }, buildClient: true });
    const created = await openRoom(loopback.url, loopback.apiKey, portrait);
    const rec = new RoomRecorder(loopback.server, created.roomId);
    const { timings } = rec;

    const [perf, view] = await Promise.all([ChromiumBrowser.launch({ fakeVideo: y4m }), ChromiumBrowser.launch()]);
    browsers.push(perf, view);
    await installProbe(perf.page);
    await installProbe(view.page);

    await perf.page.goto(`${created.performerUrl}&preview=${preview ? 1 : 0}`);
    await perf.page.evaluate(() => (window as unknown as Win).__probe.logFrames('#camera', { marker: true }));
    await perf.page.locator('#start:not([disabled])').click();
    await waitFor(
      () => perf.page.evaluate(() => (window as unknown as Win).__studio.publishState === 'connected'),
      30_000,
      'performer connected',
      100,
    );

    const viewerUrl = `${created.viewerUrl}${buffer === '' ? '' : `&buffer=${encodeURIComponent(buffer)}`}${audio ? '' : '&audio=0'}`;
    await view.page.goto(viewerUrl);
    await view.page.evaluate(() => (window as unknown as Win).__probe.logFrames('#video', { marker: true }));
    await waitFor(
      () => view.page.evaluate(() => (window as unknown as Win).__avatar.frames > 10),
      30_000,
      'viewer frames',
      100,
    );

    // Warm up (encoder ramp-up, jitter buffer settling), then record.
    await new Promise((r) => setTimeout(r, warmup * 1000));
    const rtp = (b: ChromiumBrowser): Promise<RtpCounters[]> =>
      b.page.evaluate(() => (window as unknown as Win).__probe.rtpStats());
    const [perfRtp0, viewRtp0, srvRtp0] = await Promise.all([rtp(perf), rtp(view), collectRtp(serverPeers)]);
    const t0 = Date.now();
    rec.recording = true;
    await new Promise((r) => setTimeout(r, seconds * 1000));
    rec.recording = false;
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
        droppedInMailbox: rec.dropped,
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
    await loopback?.close();
    untap();
    await rm(tmp, { recursive: true, force: true });
  }
}
