/**
 * The benchmarks' one performer client: a real @roamhq/wrtc peer that publishes a driving clip's I420 frames in a
 * loop at a steady frame rate (scheduled against the clock, not a drifting interval) and a tone, like a webcam and a
 * microphone; the clip read from a .y4m or decoded by ffmpeg; and the signaling steps that make it publish.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import wrtc from '@roamhq/wrtc';
import { filterSdpCandidates } from '../../server/media/candidates.js';
import { waitIceGathering } from '../../server/media/rtc.js';
import type { SdpResponse, SessionDescription } from '../../server/types/protocol.js';
import { call } from '../../tests/helpers/socket.js';
import { joinRoom, watch, type Connected } from './viewer.js';

/** A clip as I420 frames of one size. */
export interface Clip {
  width: number;
  height: number;
  frames: Uint8Array[];
}

/** Frames (I420) of a .y4m written by tests/helpers/media.ts makeY4m (C420, no frame parameters). */
export async function readY4m(file: string): Promise<Clip> {
  const buf = await readFile(file);
  const headerEnd = buf.indexOf(0x0a);
  const header = buf.subarray(0, headerEnd).toString('latin1');
  const width = Number(/ W(\d+)/.exec(header)?.[1]);
  const height = Number(/ H(\d+)/.exec(header)?.[1]);
  if (!width || !height) throw new Error(`not a y4m header: ${header}`);
  const size = width * height + 2 * (width >> 1) * (height >> 1);
  const frames: Uint8Array[] = [];
  let at = headerEnd + 1;
  while (at < buf.length) {
    const lineEnd = buf.indexOf(0x0a, at);
    if (lineEnd < 0 || !buf.subarray(at, lineEnd).toString('latin1').startsWith('FRAME')) break;
    at = lineEnd + 1;
    if (at + size > buf.length) break;
    frames.push(new Uint8Array(buf.subarray(at, at + size)));
    at += size;
  }
  return { width, height, frames };
}

/** A clip decoded to I420 frames (scaled to fit w×h with black bars, at `fps`), `seconds` long; played in a loop. */
export async function loadClipFrames(
  clip: string,
  width: number,
  height: number,
  seconds: number,
  fps = 30,
): Promise<Uint8Array[]> {
  const vf = `scale=${width}:${height}:force_original_aspect_ratio=decrease,pad=${width}:${height}:(ow-iw)/2:(oh-ih)/2,fps=${fps},format=yuv420p`;
  const ff = spawn(
    'ffmpeg',
    [
      '-v',
      'error',
      '-stream_loop',
      '-1',
      '-i',
      clip,
      '-t',
      String(seconds),
      '-an',
      '-vf',
      vf,
      '-f',
      'rawvideo',
      '-pix_fmt',
      'yuv420p',
      'pipe:1',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let err = '';
  ff.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const size = (width * height * 3) / 2;
  const chunks: Buffer[] = [];
  for await (const c of ff.stdout as AsyncIterable<Buffer>) chunks.push(c);
  const code = await new Promise<number | null>((r) => (ff.exitCode !== null ? r(ff.exitCode) : ff.once('close', r)));
  if (code !== 0) throw new Error(`ffmpeg failed (${code}): ${err.trim()}`);
  const all = Buffer.concat(chunks);
  const frames: Uint8Array[] = [];
  for (let o = 0; o + size <= all.length; o += size) frames.push(new Uint8Array(all.subarray(o, o + size)));
  if (frames.length === 0) throw new Error(`no frames decoded from ${clip}`);
  return frames;
}

/** The performer's microphone: a sine tone (48 kHz mono, 10 ms chunks). */
export interface Tone {
  hz: number;
  /** Peak sample value (16-bit). */
  amplitude: number;
}

/**
 * A performer made of a real wrtc peer: sends the frames in a loop at `fps` and a tone. Frames are due by the clock:
 * at most one per 5 ms tick, a late tick sends the frame due now and skips the ones it missed (as a camera would),
 * it never bursts.
 */
export class ClipPerformer {
  readonly pc = new wrtc.RTCPeerConnection({ iceServers: [] });
  readonly #video = new wrtc.nonstandard.RTCVideoSource();
  readonly #audio = new wrtc.nonstandard.RTCAudioSource();
  readonly #tracks: MediaStreamTrack[];
  #timer: NodeJS.Timeout | null = null;
  /** Video frames handed to the source. */
  framesSent = 0;
  /** Index of the next frame due. */
  #nextDue = 0;

  constructor(
    readonly frames: readonly Uint8Array[],
    readonly width: number,
    readonly height: number,
    readonly fps = 30,
    readonly tone: Tone = { hz: 220, amplitude: 6000 },
  ) {
    if (frames.length === 0) throw new TypeError('ClipPerformer: the clip has no frames');
    const v = this.#video.createTrack();
    const a = this.#audio.createTrack();
    this.#tracks = [v, a];
    const stream = new wrtc.MediaStream([v, a]);
    this.pc.addTrack(v, stream);
    this.pc.addTrack(a, stream);
  }

  /** An offer with all candidates (gathering complete), filtered to 127.0.0.1. */
  async offer(): Promise<SessionDescription> {
    const o = await this.pc.createOffer();
    await this.pc.setLocalDescription(o);
    await waitIceGathering(this.pc);
    return { type: 'offer', sdp: filterSdpCandidates(this.pc.localDescription!.sdp, ['127.0.0.1']) };
  }

  async accept(answer: SessionDescription): Promise<void> {
    await this.pc.setRemoteDescription(answer);
  }

  start(): void {
    const t0 = performance.now();
    let audioSent = 0;
    let n = 0;
    const samples = new Int16Array(480);
    const { hz, amplitude } = this.tone;
    const frame = { width: this.width, height: this.height, data: this.frames[0]! };
    this.#timer = setInterval(() => {
      const t = performance.now() - t0;
      const due = Math.floor((t * this.fps) / 1000);
      if (due >= this.#nextDue) {
        frame.data = this.frames[due % this.frames.length]!;
        this.#video.onFrame(frame);
        this.#nextDue = due + 1;
        this.framesSent++;
      }
      // Audio: 10 ms chunks, caught up with the clock.
      for (const dueAudio = Math.floor(t / 10); audioSent < dueAudio; audioSent++) {
        for (let i = 0; i < 480; i++, n++)
          samples[i] = Math.round(amplitude * Math.sin((2 * Math.PI * hz * n) / 48000));
        this.#audio.onData({ samples, sampleRate: 48000, bitsPerSample: 16, channelCount: 1, numberOfFrames: 480 });
      }
    }, 5);
  }

  close(): void {
    if (this.#timer) clearInterval(this.#timer);
    for (const t of this.#tracks) t.stop();
    this.pc.close();
  }
}

/**
 * A performer: joins with the performer token, publishes and starts sending. `fanout`, when given: the room's fan-out
 * must be that one.
 */
export async function connectPerformer(
  signalUrl: string,
  token: string,
  performer: ClipPerformer,
  o: { fanout?: string; connectMs?: number } = {},
): Promise<Connected<ClipPerformer>> {
  try {
    const { socket, joined } = await joinRoom(signalUrl, token, {
      connectMs: o.connectMs ?? 15_000,
      joinMs: 30_000,
      requestMs: 60_000,
    });
    try {
      if (o.fanout !== undefined && joined.fanout !== o.fanout) {
        throw new Error(`the room's fan-out is ${joined.fanout}, not ${o.fanout}`);
      }
      const res = await call<SdpResponse>(socket, 'publish', { sdp: await performer.offer() }, 60_000);
      await performer.accept(res.sdp);
      performer.start();
    } catch (err) {
      socket.disconnect();
      throw err;
    }
    return watch(socket, performer);
  } catch (err) {
    performer.close();
    throw err;
  }
}
