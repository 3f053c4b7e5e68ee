/**
 * The fan-out benchmark's performer: a wrtc peer that publishes a driving clip's frames at a steady frame rate
 * (scheduled against the clock, not a drifting interval) and a 440 Hz tone, like a webcam and a microphone.
 */
import { readFile } from 'node:fs/promises';
import wrtc from '@roamhq/wrtc';
import { filterSdpCandidates } from '../../server/media/candidates.js';
import { waitIceGathering } from '../../server/media/rtc.js';
import type { SessionDescription } from '../../server/types/protocol.js';

/** Frames (I420) of a .y4m written by tests/helpers/media.ts makeY4m (C420, no frame parameters). */
export async function readY4m(file: string): Promise<{ width: number; height: number; frames: Uint8Array[] }> {
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

export class ClipPerformer {
  readonly pc = new wrtc.RTCPeerConnection({ iceServers: [] });
  readonly #video = new wrtc.nonstandard.RTCVideoSource();
  readonly #audio = new wrtc.nonstandard.RTCAudioSource();
  readonly #tracks: MediaStreamTrack[];
  readonly #clip: { width: number; height: number; frames: Uint8Array[] };
  readonly #fps: number;
  #timer: NodeJS.Timeout | null = null;
  /** Video frames handed to the source. */
  framesSent = 0;
  /** Index of the next frame due (frames whose tick came too late are skipped, not burst). */
  #nextDue = 0;

  constructor(clip: { width: number; height: number; frames: Uint8Array[] }, fps = 30) {
    if (clip.frames.length === 0) throw new TypeError('ClipPerformer: the clip has no frames');
    this.#clip = clip;
    this.#fps = fps;
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
    const { width, height, frames } = this.#clip;
    const samples = new Int16Array(480);
    const t0 = performance.now();
    let audioSent = 0;
    let n = 0;
    this.#timer = setInterval(() => {
      const now = performance.now() - t0;
      // Video: one frame per tick when one is due (a late tick sends the current frame, it does not burst).
      const due = Math.floor((now * this.#fps) / 1000);
      if (due >= this.#nextDue) {
        const data = frames[due % frames.length]!;
        this.#video.onFrame({ width, height, data });
        this.#nextDue = due + 1;
        this.framesSent++;
      }
      // Audio: 10 ms chunks, caught up with the clock.
      for (const dueAudio = Math.floor(now / 10); audioSent < dueAudio; audioSent++) {
        for (let i = 0; i < 480; i++, n++) samples[i] = Math.round(8000 * Math.sin((2 * Math.PI * 440 * n) / 48000));
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
