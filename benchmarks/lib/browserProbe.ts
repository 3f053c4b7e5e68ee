/**
 * In-page measuring code for the end-to-end test and the transport benchmark. It is bundled by esbuild into a
 * script (see browserInject.ts) and installed as `window.__probe` in a page. It only reads: frame times and marker
 * numbers of a <video>, a downscaled grayscale copy of its current frame, and the audio energy of its stream.
 *
 * Times are epoch milliseconds (performance.timeOrigin + the frame's presentation time) so that two browsers on the
 * same machine can be compared.
 */

/** One presented video frame. */
export interface FrameRecord {
  /** When the frame was (expected to be) shown, epoch ms. */
  t: number;
  /** When the camera captured it (local camera frames only), epoch ms; null when the browser does not say. */
  captureT: number | null;
  /** The frame-index marker read from the picture, or null when unreadable. */
  marker: number | null;
  width: number;
  height: number;
}

interface VideoFrameMeta {
  expectedDisplayTime: number;
  presentationTime: number;
  width: number;
  height: number;
  captureTime?: number;
}
type VideoWithRvfc = HTMLVideoElement & {
  requestVideoFrameCallback(cb: (now: number, meta: VideoFrameMeta) => void): number;
};

import { collectRtp, type RtpCounters } from './browserRtp.js';

export type { RtpCounters } from './browserRtp.js';

const MARKER_BLOCKS = 16;
const MARKER_VALUE_BITS = 12;
const MARKER_BAND = 1 / 12;
const SAMPLES_PER_BLOCK = 4;

function markerCheck(v: number): number {
  return (v ^ (v >> 4) ^ (v >> 8) ^ 0b1010) & 15;
}

function video(selector: string): VideoWithRvfc {
  const v = document.querySelector(selector);
  if (!(v instanceof HTMLVideoElement)) throw new Error(`no <video> at ${selector}`);
  return v;
}

const logs = new Map<string, FrameRecord[]>();
const markerCanvas = document.createElement('canvas');
markerCanvas.width = MARKER_BLOCKS * SAMPLES_PER_BLOCK;
markerCanvas.height = 2;
const markerCtx = markerCanvas.getContext('2d', { willReadFrequently: true })!;

/** Reads the marker band: the top 1/12 of the frame squeezed into 64×2 pixels, one luma sample per block centre. */
function readMarker(v: HTMLVideoElement): number | null {
  const w = v.videoWidth;
  const h = v.videoHeight;
  if (!w || !h) return null;
  // Only the middle half of the band: its edges blur into the picture below after VP8.
  markerCtx.drawImage(
    v,
    0,
    h * MARKER_BAND * 0.25,
    w,
    h * MARKER_BAND * 0.5,
    0,
    0,
    markerCanvas.width,
    markerCanvas.height,
  );
  const px = markerCtx.getImageData(0, 0, markerCanvas.width, markerCanvas.height).data;
  let word = 0;
  for (let i = 0; i < MARKER_BLOCKS; i++) {
    let sum = 0;
    // The two middle samples of the block's four: away from the neighbours' edges.
    for (const s of [1, 2]) {
      const o = (i * SAMPLES_PER_BLOCK + s) * 4;
      sum += 0.299 * px[o]! + 0.587 * px[o + 1]! + 0.114 * px[o + 2]!;
    }
    if (sum / 2 > 128) word |= 1 << i;
  }
  const val = word & ((1 << MARKER_VALUE_BITS) - 1);
  return word >> MARKER_VALUE_BITS === markerCheck(val) ? val : null;
}

/** Starts logging every presented frame of the <video> at `selector` (idempotent per selector). */
function logFrames(selector: string, opts: { marker: boolean }): void {
  if (logs.has(selector)) return;
  const list: FrameRecord[] = [];
  logs.set(selector, list);
  const v = video(selector);
  const onFrame = (_now: number, meta: VideoFrameMeta): void => {
    list.push({
      t: performance.timeOrigin + meta.expectedDisplayTime,
      captureT:
        typeof meta.captureTime === 'number' && meta.captureTime > 0 ? performance.timeOrigin + meta.captureTime : null,
      marker: opts.marker ? readMarker(v) : null,
      width: meta.width,
      height: meta.height,
    });
    v.requestVideoFrameCallback(onFrame);
  };
  v.requestVideoFrameCallback(onFrame);
}

/** The frames logged so far for `selector` (from index `from`). */
function frames(selector: string, from = 0): FrameRecord[] {
  return (logs.get(selector) ?? []).slice(from);
}

/** The current frame of a <video> as w×h grayscale (0..255), read through a canvas (screenshots of video are black). */
function grayFrame(selector: string, w: number, h: number): number[] {
  const v = video(selector);
  const c = document.createElement('canvas');
  c.width = w;
  c.height = h;
  const ctx = c.getContext('2d', { willReadFrequently: true })!;
  ctx.drawImage(v, 0, 0, w, h);
  const d = ctx.getImageData(0, 0, w, h).data;
  const out = new Array<number>(w * h);
  for (let i = 0; i < w * h; i++) out[i] = 0.299 * d[i * 4]! + 0.587 * d[i * 4 + 1]! + 0.114 * d[i * 4 + 2]!;
  return out;
}

interface AudioMeter {
  ctx: AudioContext;
  analyser: AnalyserNode;
  buf: Float32Array<ArrayBuffer>;
  peakRms: number;
  windows: number;
  loud: number;
  timer: ReturnType<typeof setInterval>;
}
let meter: AudioMeter | null = null;

/** Starts measuring the audio energy of the <video>'s stream with a WebAudio AnalyserNode (every 50 ms). */
async function startAudioMeter(selector: string): Promise<void> {
  if (meter) return;
  const v = video(selector);
  const stream = v.srcObject;
  if (!(stream instanceof MediaStream) || stream.getAudioTracks().length === 0)
    throw new Error('the video has no audio track');
  const ctx = new AudioContext();
  await ctx.resume();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 2048;
  ctx.createMediaStreamSource(stream).connect(analyser);
  const m: AudioMeter = {
    ctx,
    analyser,
    buf: new Float32Array(analyser.fftSize),
    peakRms: 0,
    windows: 0,
    loud: 0,
    timer: 0 as never,
  };
  m.timer = setInterval(() => {
    analyser.getFloatTimeDomainData(m.buf);
    let s = 0;
    for (const x of m.buf) s += x * x;
    const rms = Math.sqrt(s / m.buf.length);
    m.windows++;
    if (rms > 0.01) m.loud++;
    m.peakRms = Math.max(m.peakRms, rms);
  }, 50);
  meter = m;
}

function audioLevel(): { peakRms: number; windows: number; loudWindows: number; state: string } | null {
  return meter
    ? { peakRms: meter.peakRms, windows: meter.windows, loudWindows: meter.loud, state: meter.ctx.state }
    : null;
}

/** Inbound/outbound RTP numbers of every RTCPeerConnection the page made (wrapped at install time). */
const peers: RTCPeerConnection[] = [];
const NativePc = window.RTCPeerConnection;
window.RTCPeerConnection = class extends NativePc {
  constructor(config?: RTCConfiguration) {
    super(config);
    peers.push(this);
  }
};

async function rtpStats(): Promise<RtpCounters[]> {
  return collectRtp(peers);
}

const probe = { logFrames, frames, grayFrame, startAudioMeter, audioLevel, rtpStats };
export type Probe = typeof probe;
(window as unknown as { __probe: Probe }).__probe = probe;
