/**
 * `npm run bench -- watermark [--frames N] [--pairs N] [--chromium-seconds S] [--fp-windows N] [--skip-chromium]`
 *
 * Robustness, cost, invisibility and false positives of the invisible watermark (server/provenance/watermark.ts).
 *
 * 1. Renders: the default engine animates several shared portraits with several shared clips (in process, 512 px),
 *    every frame stamped as `avatar render` does (visible mark, then watermark; one payload per render). Measures the
 *    watermark's cost per frame (p50/p95; the first frame of each render, which sets the watermarker up for the frame
 *    size, apart) and its PSNR (the marked frame vs the same frame with only the visible mark, Y plane and all planes).
 *    The cost is measured between engine frames, as in a live room; it is measured again with nothing else running in
 *    this process (every render's frames stamped again back to back, warm) to tell the watermark's own cost from the
 *    machine's load (2 shared cores: the load average goes into the JSON).
 * 2. Attacks on each render, by the real ffmpeg: none, VP8 (libvpx) at 500 kbps, a scale to 50 % (ffmpeg's default
 *    bicubic), and both. Every 1-second window is decoded on its own: detection rate (the right payload decoded) and
 *    raw bit error rate (before error correction) per attack.
 * 3. A real viewer in Chromium: a server in this process (default engine), the studio page in one Chromium sending a
 *    shared clip as its fake camera, the viewer page in another, whose <video> frames are drawn to a canvas and read
 *    back (requestVideoFrameCallback + getImageData). Every 1-second window of the recording is decoded.
 * 4. False positives: every original image of ../shared/media and ../shared/train (all portraits, full size), and the
 *    first `--fp-windows` 1-second windows of every original clip (all clips).
 *
 * Writes benchmarks/results/watermark.json.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { I420Frame } from '../server/types/image.js';
import { loadConfig } from '../server/config.js';
import { setLogLevel } from '../server/logger.js';
import { detectFile } from '../server/provenance/detect.js';
import { VisibleMark } from '../server/provenance/mark.js';
import { idHash, payloadHex, timeSlot, type WatermarkPayload } from '../server/provenance/payload.js';
import { Watermarker, WatermarkDetector, bitErrorRate, type WindowResult } from '../server/provenance/watermark.js';
import { loadPortrait, openEngine } from '../server/quality/cli.js';
import { runOffline } from '../server/quality/offline.js';
import { mediaDir, testDataDir } from '../scripts/testData.js';
import { ChromiumBrowser } from '../tests/helpers/chromium.js';
import { startPerformer } from '../tests/helpers/g2g.js';
import { makeY4m } from '../tests/helpers/media.js';
import { captureVideoLuma } from '../tests/provenance/chromiumCapture.js';
import { flag, num, parseOptions } from './lib/args.js';
import { openRoom, startLoopbackServer } from './lib/loopback.js';
import { summarize, writeResult } from './lib/stats.js';

/** Runs ffmpeg with `input` on stdin; resolves with stdout. */
function ffmpeg(args: string[], input?: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const p = spawn('ffmpeg', ['-v', 'error', '-nostdin', ...args], {
      stdio: [input ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    let err = '';
    p.stdout!.on('data', (d: Buffer) => out.push(d));
    p.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    p.on('error', reject);
    p.on('close', (code) =>
      code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`ffmpeg failed: ${err.slice(-500)}`)),
    );
    if (input && p.stdin) {
      p.stdin.on('error', () => undefined); // ffmpeg exiting early surfaces as its exit code above
      p.stdin.end(input);
    }
  });
}

interface Attack {
  name: string;
  /** Raw yuv420p frames (w x h) in, raw yuv420p frames out, with their size. */
  run(raw: Buffer, w: number, h: number, fps: number): Promise<{ data: Buffer; w: number; h: number }>;
}

const rawIn = (w: number, h: number, fps: number): string[] => [
  '-f',
  'rawvideo',
  '-pix_fmt',
  'yuv420p',
  '-s',
  `${w}x${h}`,
  '-r',
  String(fps),
  '-i',
  'pipe:0',
];
const rawOut = ['-f', 'rawvideo', '-pix_fmt', 'yuv420p', 'pipe:1'];

async function vp8(
  raw: Buffer,
  w: number,
  h: number,
  fps: number,
  scale: boolean,
): Promise<{ data: Buffer; w: number; h: number }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'wm-bench-'));
  try {
    const file = path.join(dir, 'a.webm');
    await ffmpeg(
      [
        ...rawIn(w, h, fps),
        ...(scale ? ['-vf', 'scale=iw/2:ih/2'] : []),
        '-c:v',
        'libvpx',
        '-b:v',
        '500k',
        '-deadline',
        'realtime',
        '-cpu-used',
        '8',
        '-y',
        file,
      ],
      raw,
    );
    const ow = scale ? w / 2 : w;
    const oh = scale ? h / 2 : h;
    return { data: await ffmpeg(['-i', file, ...rawOut]), w: ow, h: oh };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const attacks: Attack[] = [
  { name: 'none', run: (raw, w, h) => Promise.resolve({ data: raw, w, h }) },
  { name: 'vp8-500kbps', run: (raw, w, h, fps) => vp8(raw, w, h, fps, false) },
  {
    name: 'scale-50%',
    run: async (raw, w, h, fps) => ({
      data: await ffmpeg([...rawIn(w, h, fps), '-vf', 'scale=iw/2:ih/2', ...rawOut], raw),
      w: w / 2,
      h: h / 2,
    }),
  },
  { name: 'scale-50%+vp8-500kbps', run: (raw, w, h, fps) => vp8(raw, w, h, fps, true) },
];

interface Tally {
  windows: number;
  detected: number;
  wrongPayload: number;
  ber: number[];
  agreement: number[];
}
const tally = (): Tally => ({ windows: 0, detected: 0, wrongPayload: 0, ber: [], agreement: [] });

function count(t: Tally, r: WindowResult, expected: readonly WatermarkPayload[]): void {
  t.windows++;
  const ok = r.present && expected.some((p) => payloadHex(p) === r.payload);
  if (ok) t.detected++;
  else if (r.present) t.wrongPayload++;
  t.ber.push(Math.min(...expected.map((p) => bitErrorRate(r.soft, p))));
  t.agreement.push(r.agreement);
}

function report(t: Tally): Record<string, unknown> {
  const mean = (a: number[]): number => a.reduce((x, y) => x + y, 0) / Math.max(1, a.length);
  return {
    windows: t.windows,
    detected: t.detected,
    detection_rate: Math.round((t.detected / Math.max(1, t.windows)) * 10000) / 10000,
    wrong_payload: t.wrongPayload,
    ber_mean: Math.round(mean(t.ber) * 10000) / 10000,
    ber_max: Math.round(Math.max(0, ...t.ber) * 10000) / 10000,
    agreement_min: Math.round(Math.min(...t.agreement) * 1000) / 1000,
  };
}

/** Detects every 1-second window of raw yuv420p frames. */
function windows(raw: Buffer, w: number, h: number, perWindow: number, onWindow: (r: WindowResult) => void): void {
  const fb = (w * h * 3) / 2;
  const det = new WatermarkDetector();
  const n = Math.floor(raw.length / fb);
  for (let i = 0; i < n; i++) {
    det.addLuma(new Uint8Array(raw.buffer, raw.byteOffset + i * fb, w * h), w, h);
    if (det.frames === perWindow) {
      onWindow(det.result());
      det.reset();
    }
  }
}

/**
 * The watermark's cost with nothing else running in this process: a copy of every frame of a render stamped again,
 * back to back, by a warm watermarker (5 frames of warm-up not counted).
 */
function isolatedCost(raw: Uint8Array, w: number, h: number, payload: WatermarkPayload, strength: number): number[] {
  const fb = (w * h * 3) / 2;
  const n = Math.floor(raw.length / fb);
  const frame: I420Frame = { width: w, height: h, data: new Uint8Array(fb) };
  const wm = new Watermarker(strength);
  const out: number[] = [];
  for (let i = 0; i < n + 5; i++) {
    frame.data.set(raw.subarray((i % n) * fb, (i % n) * fb + fb));
    const t0 = performance.now();
    wm.apply(frame, payload);
    const t1 = performance.now();
    if (i >= 5) out.push(t1 - t0);
  }
  return out;
}

function psnr(sumSq: number, n: number): number {
  return sumSq === 0 ? Infinity : 10 * Math.log10((255 * 255 * n) / sumSq);
}

async function listFiles(dir: string, exts: RegExp): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && exts.test(e.name)) out.push(path.join(e.parentPath, e.name));
  }
  return out.sort();
}

/** The flags (see the header). */
export const OPTIONS = {
  frames: num(300),
  pairs: num(6),
  chromiumSeconds: num(20),
  fpWindows: num(10),
  skipChromium: flag(),
};

export async function main(args: string[]): Promise<void> {
  setLogLevel('warn');
  const {
    frames,
    pairs: pairsWanted,
    chromiumSeconds,
    fpWindows,
    skipChromium,
  } = parseOptions('watermark', args, OPTIONS);
  const config = loadConfig(process.env);

  const portraits = [
    'real_woman_dark_hair.png',
    'real_asian_young_woman.jpg',
    'painting_mona_lisa.jpg',
    'cartoon_3d_boy.jpg',
    'real_older_man_glasses.jpg',
    'real_japanese_woman.png',
  ];
  const clips = ['woman_speech_head_motion.mp4', 'man_glasses_talking_portrait.mp4', 'young_woman_expressive_wink.mp4'];
  const pairs = portraits.slice(0, pairsWanted).map((p, i) => ({ portrait: p, clip: clips[i % clips.length]! }));

  const byAttack = new Map(attacks.map((a) => [a.name, tally()]));
  const costMs: number[] = [];
  const stampMs: number[] = [];
  const firstMs: number[] = [];
  const isolatedMs: number[] = [];
  const loadStart = os.loadavg();
  let sqY = 0;
  let nY = 0;
  let sqAll = 0;
  let nAll = 0;
  const renders: Record<string, unknown>[] = [];

  const engine = await openEngine('default', config.avatar, { outputSize: 512 });
  try {
    for (const [k, pair] of pairs.entries()) {
      const payload: WatermarkPayload = { id: idHash(`bench-render-${k}`), slot: timeSlot(Date.now()) };
      const mark = new VisibleMark({ corner: config.provenance.mark.corner, opacity: config.provenance.mark.opacity });
      const wm = new Watermarker(config.provenance.watermark.strength);
      let raw: Buffer | null = null;
      let w = 0;
      let h = 0;
      let fps = 30;
      let count0 = 0;
      // The unmarked copy for PSNR, allocated once per render: a 384 KB allocation per frame would trigger
      // collections that land in the timed calls and are the benchmark's, not the watermark's.
      let before: Uint8Array | null = null;
      const t0 = performance.now();
      await runOffline({
        engine,
        driving: path.join(mediaDir, 'driving', pair.clip),
        portrait: await loadPortrait(path.join(mediaDir, 'portraits', pair.portrait)),
        maxFrames: frames,
        onPrepared: ({ prepared, info }) => {
          w = prepared.width;
          h = prepared.height;
          fps = info.fps;
          raw = Buffer.alloc(((w * h * 3) / 2) * frames);
        },
        onFrame: (f) => {
          const out: I420Frame = f.outputI420;
          const ts = performance.now();
          mark.apply(out);
          if (before?.length !== out.data.length) before = new Uint8Array(out.data.length);
          before.set(out.data);
          const tw = performance.now();
          wm.apply(out, payload);
          const te = performance.now();
          if (count0 === 0) {
            firstMs.push(te - tw);
          } else {
            costMs.push(te - tw);
            stampMs.push(te - ts);
          }
          for (let i = 0; i < out.data.length; i++) {
            const d = out.data[i]! - before[i]!;
            if (i < w * h) sqY += d * d;
            sqAll += d * d;
          }
          nY += w * h;
          nAll += out.data.length;
          raw!.set(out.data.subarray(0, (w * h * 3) / 2), count0 * ((w * h * 3) / 2));
          count0++;
        },
      });
      const data = raw!.subarray(0, count0 * ((w * h * 3) / 2));
      isolatedMs.push(...isolatedCost(data, w, h, payload, config.provenance.watermark.strength));
      const perWindow = Math.round(fps);
      const perAttack: Record<string, unknown> = {};
      for (const a of attacks) {
        const t = tally();
        const attacked = await a.run(data, w, h, fps);
        windows(attacked.data, attacked.w, attacked.h, perWindow, (r) => {
          count(t, r, [payload]);
          count(byAttack.get(a.name)!, r, [payload]);
        });
        perAttack[a.name] = report(t);
      }
      renders.push({
        ...pair,
        frames: count0,
        size: `${w}x${h}`,
        fps,
        seconds: Math.round((performance.now() - t0) / 100) / 10,
        attacks: perAttack,
      });
      process.stderr.write(
        `render ${k + 1}/${pairs.length} ${pair.portrait} x ${pair.clip}: ${JSON.stringify(perAttack)}\n`,
      );
    }
  } finally {
    engine.close();
  }

  const loadAfterRenders = os.loadavg();
  let chromium: Record<string, unknown> | { skipped: string } = { skipped: '--skip-chromium' };
  if (!skipChromium) chromium = await chromiumViewer(chromiumSeconds);

  // False positives on the original media.
  const fpStart = performance.now();
  const images = [
    ...(await listFiles(path.join(mediaDir, 'portraits'), /\.(png|jpe?g|webp)$/i)),
    ...(await listFiles(path.join(testDataDir, 'train', 'portraits'), /\.(png|jpe?g|webp)$/i)),
  ];
  const videos = [
    ...(await listFiles(path.join(mediaDir, 'driving'), /\.(mp4|webm|mov|mkv)$/i)),
    ...(await listFiles(path.join(testDataDir, 'train', 'clips'), /\.(mp4|webm|mov|mkv)$/i)),
  ];
  let fpWindowsTotal = 0;
  let fpDetected = 0;
  const fpAgreement: number[] = [];
  const fpHits: string[] = [];
  for (const file of [...images, ...videos]) {
    const d = await detectFile(file, videos.includes(file) ? { maxFrames: fpWindows * 60 } : {});
    const results = d.fps > 0 ? d.results.slice(0, fpWindows) : d.results;
    for (const r of results) {
      fpWindowsTotal++;
      fpAgreement.push(r.agreement);
      if (r.present) {
        fpDetected++;
        fpHits.push(`${path.relative(testDataDir, file)}: ${r.payload}`);
      }
    }
  }

  const result = {
    setup: {
      renders: `${pairs.length} renders of the default engine at 512 px, ${frames} frames each (shared portraits x clips), stamped like avatar render (visible mark, then watermark)`,
      payload:
        '48 bits (32-bit id hash + 16-bit minute slot) + CRC-16, convolutional K=7 r=1/2 -> 140 coded bits on a 64x64 luma lattice',
      window:
        '1 s of frames (round(fps)), each decoded on its own; detected = the right payload decoded (CRC + agreement >= 0.9)',
      ber: 'raw bit error rate of the 140 coded bits before Viterbi decoding',
      cpus: os.cpus().length,
    },
    cost_ms_per_512_frame: {
      watermark: summarize(costMs),
      mark_and_watermark: summarize(stampMs),
      first_frame: summarize(firstMs),
      watermark_isolated: summarize(isolatedMs),
      load_average_1m: {
        start: Math.round(loadStart[0]! * 100) / 100,
        after_renders: Math.round(loadAfterRenders[0]! * 100) / 100,
      },
      note: 'watermark: between engine frames (the first frame of each render apart: first_frame); watermark_isolated: the same frames stamped again back to back, nothing else running in this process',
    },
    psnr_db: {
      y: Math.round(psnr(sqY, nY) * 100) / 100,
      yuv: Math.round(psnr(sqAll, nAll) * 100) / 100,
      note: 'marked frame vs the same frame with only the visible mark (the watermark alone)',
    },
    attacks: Object.fromEntries([...byAttack].map(([k, t]) => [k, report(t)])),
    chromium_viewer: chromium,
    false_positives: {
      images: images.length,
      clips: videos.length,
      windows: fpWindowsTotal,
      detected: fpDetected,
      hits: fpHits,
      agreement_max: Math.round(Math.max(...fpAgreement) * 1000) / 1000,
      sampled: `every image in full; the first ${fpWindows} one-second windows of every clip (shorter clips: all of them)`,
      seconds: Math.round((performance.now() - fpStart) / 1000),
    },
    renders,
  };
  writeResult('watermark', result);
}

/**
 * A real viewer in Chromium: records the frames its <video> shows and decodes every 1-second window. The room's
 * payload: the room id's hash and the minute (a window at a minute boundary may carry either).
 */
export async function chromiumViewer(seconds: number): Promise<Record<string, unknown>> {
  const y4m = await makeY4m({
    source: path.join(mediaDir, 'driving', 'woman_speech_head_motion.mp4'),
    width: 640,
    height: 480,
    fps: 25,
    seconds: 10,
  });
  const server = await startLoopbackServer({ buildClient: true });
  const performer = await ChromiumBrowser.launch({ fakeVideo: y4m });
  const viewer = await ChromiumBrowser.launch();
  try {
    const room = await openRoom(
      server.url,
      server.apiKey,
      path.join(mediaDir, 'portraits', 'real_woman_dark_hair.png'),
    );
    await startPerformer(performer.page, room.performerUrl);
    await viewer.page.goto(room.viewerUrl);
    const page = viewer.page;
    await page.waitForFunction(
      () => ((document.getElementById('video') as HTMLVideoElement | null)?.videoWidth ?? 0) > 0,
      null,
      { timeout: 60_000 },
    );
    // Let the sender's bandwidth estimate ramp up (WebRTC starts at ~300 kbps), as a viewer who joined a running room.
    await page.waitForTimeout(3000);
    const t0 = Date.now();
    const frames = await captureVideoLuma(page, seconds * 1000);
    const t1 = Date.now();
    const expected = [timeSlot(t0), timeSlot(t1)].map((slot) => ({ id: idHash(room.roomId), slot }));
    const t = tally();
    const det = new WatermarkDetector();
    const start = frames[0]?.t ?? 0;
    let win = 0;
    const sizes = new Set<string>();
    for (const f of frames) {
      sizes.add(`${f.width}x${f.height}`);
      const k = Math.floor((f.t - start) / 1000);
      if (k !== win && det.frames > 0) {
        count(t, det.result(), expected);
        det.reset();
        win = k;
      }
      det.addLuma(f.luma, f.width, f.height);
    }
    // The last window counts when it is at least half full.
    if (det.frames * 2 >= frames.length / seconds) count(t, det.result(), expected);
    return {
      ...report(t),
      frames: frames.length,
      fps: Math.round((frames.length / seconds) * 10) / 10,
      sizes: [...sizes],
      how: 'studio page (fake camera: a shared clip) -> server (default engine) -> viewer page; its <video> frames drawn to a canvas (requestVideoFrameCallback + getImageData), windows of 1 s of wall time, after 3 s of bandwidth ramp-up',
    };
  } finally {
    await viewer.close();
    await performer.close();
    await server.close();
    await rm(path.dirname(y4m), { recursive: true, force: true });
  }
}
