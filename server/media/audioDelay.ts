/**
 * Audio delay that keeps the performer's voice in sync with the synthesized video.
 *
 * The ingest's audio sink hands 10 ms chunks at a steady cadence; the video path adds a varying latency
 * (decode, mailbox wait, engine, encode). The delay line holds back a whole number of 10 ms chunks: each incoming
 * chunk releases the chunks older than the current delay, so the output inherits the sink's cadence without a timer.
 * The delay follows a running estimate of the video latency, at most one chunk per `stepEveryChunks` so that
 * changes stay inaudible. Storage is a ring of preallocated chunks (allocated again only if the audio format changes).
 */

/** One chunk of 16-bit PCM audio, as wrtc's RTCAudioSink/RTCAudioSource use it. */
export interface AudioChunk {
  samples: Int16Array;
  sampleRate: number;
  bitsPerSample: number;
  channelCount: number;
  numberOfFrames: number;
}

export interface AudioDelayOptions {
  /** Largest delay, ms; default 2000. */
  maxDelayMs?: number;
  /** Chunk duration, ms; default 10 (WebRTC's audio frame). */
  chunkMs?: number;
  /** Smallest number of chunks between two one-chunk delay changes; default 20 (200 ms). */
  stepEveryChunks?: number;
}

export class AudioDelayLine {
  readonly #chunkMs: number;
  readonly #maxChunks: number;
  readonly #stepEvery: number;
  #ring: AudioChunk[] = [];
  #read = 0;
  #write = 0;
  #targetChunks = 0;
  #delayChunks = -1;
  #sinceStep = 0;
  #format = '';

  constructor(opts: AudioDelayOptions = {}) {
    this.#chunkMs = opts.chunkMs ?? 10;
    this.#maxChunks = Math.ceil((opts.maxDelayMs ?? 2000) / this.#chunkMs);
    this.#stepEvery = opts.stepEveryChunks ?? 20;
  }

  /** Sets the wanted delay (clamped to 0..maxDelayMs); the line moves towards it one chunk at a time. */
  setDelay(ms: number): void {
    const chunks = Math.round((Number.isFinite(ms) ? ms : 0) / this.#chunkMs);
    this.#targetChunks = Math.min(this.#maxChunks, Math.max(0, chunks));
  }

  /** The delay applied now, ms. */
  get delayMs(): number {
    return Math.max(0, this.#delayChunks) * this.#chunkMs;
  }

  /** Chunks held now. */
  get buffered(): number {
    return this.#write - this.#read;
  }

  /**
   * Takes one chunk (copied) and calls `emit` for each chunk that has waited long enough (0, 1 or 2 chunks; the
   * emitted chunk's samples are only valid during the call).
   */
  push(chunk: AudioChunk, emit: (chunk: AudioChunk) => void): void {
    const format = `${chunk.sampleRate}/${chunk.channelCount}/${chunk.samples.length}`;
    if (format !== this.#format) this.#reset(chunk, format);
    if (this.#delayChunks < 0) this.#delayChunks = this.#targetChunks;
    else if (++this.#sinceStep >= this.#stepEvery && this.#delayChunks !== this.#targetChunks) {
      this.#delayChunks += this.#delayChunks < this.#targetChunks ? 1 : -1;
      this.#sinceStep = 0;
    }
    const size = this.#ring.length;
    // A full ring (the delay cannot exceed the ring) drops the oldest chunk.
    if (this.#write - this.#read >= size) this.#read++;
    const slot = this.#ring[this.#write % size]!;
    slot.samples.set(chunk.samples);
    slot.numberOfFrames = chunk.numberOfFrames;
    this.#write++;
    while (this.#write - this.#read > this.#delayChunks) {
      emit(this.#ring[this.#read % size]!);
      this.#read++;
    }
  }

  /** Forgets buffered audio (e.g. when the performer stops publishing). */
  clear(): void {
    this.#read = this.#write = 0;
    this.#delayChunks = -1;
    this.#sinceStep = 0;
  }

  #reset(chunk: AudioChunk, format: string): void {
    this.#format = format;
    this.#ring = Array.from({ length: this.#maxChunks + 2 }, () => ({
      samples: new Int16Array(chunk.samples.length),
      sampleRate: chunk.sampleRate,
      bitsPerSample: chunk.bitsPerSample,
      channelCount: chunk.channelCount,
      numberOfFrames: chunk.numberOfFrames,
    }));
    this.clear();
  }
}

/**
 * A running estimate of the video path's latency (receive -> publish), ms: an exponential moving average, so that
 * one slow frame moves the audio delay only a little.
 */
export class LatencyEstimator {
  #value = NaN;
  readonly #alpha: number;

  constructor(alpha = 0.05) {
    this.#alpha = alpha;
  }

  add(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) return;
    if (Number.isNaN(this.#value)) this.#value = ms;
    else this.#value += this.#alpha * (ms - this.#value);
  }

  /** The estimate, ms (0 before the first sample). */
  get value(): number {
    return Number.isNaN(this.#value) ? 0 : this.#value;
  }
}
