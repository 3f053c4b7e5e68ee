/**
 * Publisher: the synthesized stream of a room. One RTCVideoSource track fed with the avatar frames (I420 at the
 * prepared portrait's size) and one RTCAudioSource track fed with the performer's voice, delayed by the measured
 * video latency (plus config.media.audioDelayOffsetMs) so that lips and voice stay in sync. Fan-outs attach these
 * two tracks to every viewer (direct) or produce them into the SFU.
 *
 * While no frame has been published for `idleIntervalMs`, the last frame (after setPortrait: the portrait) is sent
 * again at that interval, so viewers see the portrait rather than a frozen or black picture and encoders keep
 * producing key frames for newcomers.
 *
 * Provenance: every frame is stamped (visible "AI avatar" mark + invisible watermark, server/provenance) once, on
 * the kept copy, before it is sent: the one place both the live frames and the idle frame pass through.
 */
import type { Logger } from '../logger.js';
import type { I420Frame } from '../types/image.js';
import type { FrameStamper } from '../provenance/stamper.js';
import { AudioDelayLine, LatencyEstimator, type AudioChunk } from './audioDelay.js';
import { i420Bytes } from '../types/image.js';
import { wrtc } from './rtc.js';

export interface PublisherOptions {
  log: Logger;
  /** Added to the measured video latency, ms (config.media.audioDelayOffsetMs). */
  audioDelayOffsetMs: number;
  /** Idle resend interval, ms; default 250 (4 fps). */
  idleIntervalMs?: number;
  /** Marks and watermarks every frame before it is sent (config.provenance); none: frames go out unchanged. */
  stamper?: FrameStamper;
}

export class Publisher {
  readonly #log: Logger;
  readonly #video = new wrtc.nonstandard.RTCVideoSource();
  readonly #audio = new wrtc.nonstandard.RTCAudioSource();
  readonly videoTrack: MediaStreamTrack;
  readonly audioTrack: MediaStreamTrack;
  readonly #delay = new AudioDelayLine();
  readonly #latency = new LatencyEstimator();
  readonly #offsetMs: number;
  readonly #idleMs: number;
  readonly #stamper: FrameStamper | null;
  #last: I420Frame | null = null;
  #lastAt = 0;
  #timer: NodeJS.Timeout;
  #closed = false;
  #framesSent = 0;
  #audioSent = 0;

  constructor(opts: PublisherOptions) {
    this.#log = opts.log;
    this.#offsetMs = opts.audioDelayOffsetMs;
    this.#idleMs = opts.idleIntervalMs ?? 250;
    this.#stamper = opts.stamper?.active ? opts.stamper : null;
    this.videoTrack = this.#video.createTrack();
    this.audioTrack = this.#audio.createTrack();
    this.#delay.setDelay(this.#offsetMs);
    this.#timer = setInterval(() => this.#idle(), this.#idleMs);
    this.#timer.unref();
  }

  get closed(): boolean {
    return this.#closed;
  }
  /** Video frames handed to the source (including idle resends). */
  get framesSent(): number {
    return this.#framesSent;
  }
  /** Audio chunks handed to the source. */
  get audioChunksSent(): number {
    return this.#audioSent;
  }
  /** The audio delay applied now, ms. */
  get audioDelayMs(): number {
    return this.#delay.delayMs;
  }
  /** The running estimate of the video latency (receive -> publish), ms. */
  get videoLatencyMs(): number {
    return this.#latency.value;
  }

  /**
   * Sends one synthesized frame (copied by libwebrtc) and keeps a copy for idle resends. Returns the time it took, ms.
   * @param latencyMs the frame's receive -> publish latency, when it came from a performer frame.
   */
  publishVideo(frame: I420Frame, latencyMs?: number): number {
    if (this.#closed) return 0;
    const t0 = performance.now();
    // libwebrtc refuses views on shared memory (the worker's output slots): send the kept copy.
    this.#send(this.#keep(frame));
    if (latencyMs !== undefined) {
      this.#latency.add(latencyMs);
      this.#delay.setDelay(this.#latency.value + this.#offsetMs);
    }
    return performance.now() - t0;
  }

  /** Sets the picture sent while idle (e.g. the portrait), and sends it once now. */
  setIdleFrame(frame: I420Frame): void {
    if (this.#closed) return;
    this.#send(this.#keep(frame));
  }

  /** One 10 ms chunk of the performer's audio; it leaves after the current delay. */
  pushAudio(chunk: AudioChunk): void {
    if (this.#closed) return;
    this.#delay.push(chunk, (c) => {
      this.#audio.onData({
        samples: c.samples,
        sampleRate: c.sampleRate,
        bitsPerSample: c.bitsPerSample,
        channelCount: c.channelCount,
        numberOfFrames: c.numberOfFrames,
      });
      this.#audioSent++;
    });
  }

  /** Drops buffered audio (the performer stopped publishing). */
  resetAudio(): void {
    this.#delay.clear();
  }

  /** Stops both tracks and the idle timer. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.videoTrack.stop();
    this.audioTrack.stop();
    this.#last = null;
  }

  #send(frame: I420Frame): void {
    const bytes = i420Bytes(frame.width, frame.height);
    this.#video.onFrame({ width: frame.width, height: frame.height, data: frame.data.subarray(0, bytes) });
    this.#lastAt = performance.now();
    this.#framesSent++;
  }

  /**
   * Copies the frame into the buffer kept for idle resends (allocated once per size), stamps the copy (the engine's
   * frame, possibly shared memory, is never written) and returns it.
   */
  #keep(frame: I420Frame): I420Frame {
    const bytes = i420Bytes(frame.width, frame.height);
    if (!this.#last || this.#last.data.length !== bytes) {
      this.#last = { width: frame.width, height: frame.height, data: new Uint8Array(bytes) };
    }
    this.#last.width = frame.width;
    this.#last.height = frame.height;
    this.#last.data.set(frame.data.subarray(0, bytes));
    this.#stamper?.stamp(this.#last);
    return this.#last;
  }

  #idle(): void {
    if (this.#closed || !this.#last) return;
    if (performance.now() - this.#lastAt < this.#idleMs) return;
    try {
      this.#send(this.#last);
    } catch (err) {
      this.#log.warn('idle frame send failed', { err: err as Error });
    }
  }
}
