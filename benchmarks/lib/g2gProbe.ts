/**
 * In-page code for the default-engine e2e test and the glass-to-glass benchmark, installed as `window.__g2g` (see
 * g2gInject.ts). It only reads the avatar <video>:
 *
 * - `startSampling`: every `intervalMs`, a w×h grayscale copy of the current frame (base64 bytes, with the epoch
 *   time it was read), for face tracking in Node;
 * - `startMouthMeter`: for every presented frame (requestVideoFrameCallback), the mean luma of a region (the
 *   portrait's mouth), timestamped like browserProbe's frame log (performance.timeOrigin + expected display time).
 * - `startOnsetMeter`: the onsets of sound bursts in the audio track of a <video>'s stream (the fake microphone's
 *   tone bursts on the performer page, the avatar's voice on the viewer page), sample-accurate in an AudioWorklet
 *   and timed as the AudioContext's output time of that sample (getOutputTimestamp), in epoch ms. Both pages tap
 *   their audio the same way, so the tap's own latency cancels in a difference between the two.
 */

interface FrameMeta {
  expectedDisplayTime: number;
}
type VideoWithRvfc = HTMLVideoElement & {
  requestVideoFrameCallback(cb: (now: number, meta: FrameMeta) => void): number;
};

/** One sampled frame: epoch ms when read, and w×h gray bytes as base64. */
export interface GraySample {
  t: number;
  width: number;
  height: number;
  gray: string;
}

/** One presented frame's region statistic. */
export interface RegionSample {
  /** Expected display time, epoch ms. */
  t: number;
  /** Mean luma (0..255) of the region. */
  v: number;
}

/** A region in fractions of the frame (0..1). */
export interface Region {
  x: number;
  y: number;
  w: number;
  h: number;
}

function video(selector: string): VideoWithRvfc {
  const v = document.querySelector(selector);
  if (!(v instanceof HTMLVideoElement)) throw new Error(`no <video> at ${selector}`);
  return v;
}

let samples: GraySample[] = [];
let sampler: ReturnType<typeof setInterval> | null = null;

function grayBytes(ctx: CanvasRenderingContext2D, w: number, h: number): Uint8Array {
  const d = ctx.getImageData(0, 0, w, h).data;
  const out = new Uint8Array(w * h);
  for (let i = 0; i < w * h; i++)
    out[i] = Math.round(0.299 * d[i * 4]! + 0.587 * d[i * 4 + 1]! + 0.114 * d[i * 4 + 2]!);
  return out;
}

function base64(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/** Starts sampling the <video> every `intervalMs` at w×h (restarts if already running; drops old samples). */
function startSampling(selector: string, w: number, h: number, intervalMs: number): void {
  stopSampling();
  samples = [];
  const v = video(selector);
  const c = document.createElement('canvas');
  c.width = w;
  c.height = h;
  const ctx = c.getContext('2d', { willReadFrequently: true })!;
  sampler = setInterval(() => {
    if (!v.videoWidth || !v.videoHeight) return;
    ctx.drawImage(v, 0, 0, w, h);
    samples.push({ t: Date.now(), width: w, height: h, gray: base64(grayBytes(ctx, w, h)) });
  }, intervalMs);
}

function stopSampling(): void {
  if (sampler !== null) clearInterval(sampler);
  sampler = null;
}

/** The samples taken since the last call. */
function takeSamples(): GraySample[] {
  const out = samples;
  samples = [];
  return out;
}

let series: RegionSample[] = [];
let metering = false;

/** Records the mean luma of `region` for every presented frame of the <video> (once per page). */
function startMouthMeter(selector: string, region: Region): void {
  if (metering) return;
  metering = true;
  const v = video(selector);
  const W = 48;
  const H = 32;
  const c = document.createElement('canvas');
  c.width = W;
  c.height = H;
  const ctx = c.getContext('2d', { willReadFrequently: true })!;
  const onFrame = (_now: number, meta: FrameMeta): void => {
    const vw = v.videoWidth;
    const vh = v.videoHeight;
    if (vw && vh) {
      ctx.drawImage(v, region.x * vw, region.y * vh, region.w * vw, region.h * vh, 0, 0, W, H);
      const g = grayBytes(ctx, W, H);
      let sum = 0;
      for (const x of g) sum += x;
      series.push({ t: performance.timeOrigin + meta.expectedDisplayTime, v: sum / g.length });
    }
    v.requestVideoFrameCallback(onFrame);
  };
  v.requestVideoFrameCallback(onFrame);
}

/** The region samples recorded since the last call. */
function takeMouthSeries(): RegionSample[] {
  const out = series;
  series = [];
  return out;
}

/** One detected sound onset. */
export interface AudioOnset {
  /** Output time of the onset's first loud sample, epoch ms. */
  t: number;
  /** Its absolute amplitude (0..1). */
  level: number;
}

// The worklet: an onset is the first sample above the threshold after at least `quietS` below it. The threshold
// follows the loudest sample seen (slowly decaying), with a floor, so gain changes (AGC, Opus) do not matter.
const ONSET_WORKLET = `
class OnsetProcessor extends AudioWorkletProcessor {
  constructor() { super(); this.peak = 0; this.quiet = 0; this.minQuiet = Math.round(sampleRate * 0.3); }
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (!ch) return true;
    this.peak *= 0.997;
    for (let i = 0; i < ch.length; i++) {
      const a = Math.abs(ch[i]);
      if (a > this.peak) this.peak = a;
      if (a > Math.max(0.02, 0.25 * this.peak)) {
        if (this.quiet >= this.minQuiet) this.port.postMessage({ frame: currentFrame + i, level: a });
        this.quiet = 0;
      } else this.quiet++;
    }
    return true;
  }
}
registerProcessor('g2g-onset', OnsetProcessor);
`;

let onsets: AudioOnset[] = [];
let onsetCtx: AudioContext | null = null;

/** Starts detecting sound onsets in the audio of the <video>'s stream (once per page). */
async function startOnsetMeter(selector: string): Promise<void> {
  if (onsetCtx) return;
  const v = video(selector);
  const stream = v.srcObject;
  if (!(stream instanceof MediaStream) || stream.getAudioTracks().length === 0)
    throw new Error(`the <video> at ${selector} has no audio track`);
  const ctx = new AudioContext({ latencyHint: 'interactive' });
  onsetCtx = ctx;
  const url = URL.createObjectURL(new Blob([ONSET_WORKLET], { type: 'text/javascript' }));
  await ctx.audioWorklet.addModule(url);
  URL.revokeObjectURL(url);
  const src = ctx.createMediaStreamSource(new MediaStream(stream.getAudioTracks()));
  const node = new AudioWorkletNode(ctx, 'g2g-onset', { numberOfInputs: 1, numberOfOutputs: 1 });
  const mute = ctx.createGain();
  mute.gain.value = 0;
  // Pulled by the destination (silently), so the worklet runs on the audio clock.
  src.connect(node).connect(mute).connect(ctx.destination);
  node.port.onmessage = (e: MessageEvent<{ frame: number; level: number }>) => {
    const ts = ctx.getOutputTimestamp();
    if (ts.contextTime === undefined || ts.performanceTime === undefined || ts.performanceTime === 0) return;
    const t = performance.timeOrigin + ts.performanceTime + (e.data.frame / ctx.sampleRate - ts.contextTime) * 1000;
    onsets.push({ t, level: e.data.level });
  };
  await ctx.resume();
}

/** The onsets detected since the last call. */
function takeOnsets(): AudioOnset[] {
  const out = onsets;
  onsets = [];
  return out;
}

const g2g = {
  startSampling,
  stopSampling,
  takeSamples,
  startMouthMeter,
  takeMouthSeries,
  startOnsetMeter,
  takeOnsets,
};
export type G2gProbe = typeof g2g;
(window as unknown as { __g2g: G2gProbe }).__g2g = g2g;
