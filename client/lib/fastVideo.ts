/**
 * The low-latency mode's video path: the received video's encoded frames are taken as soon as libwebrtc has
 * assembled them (an RTCRtpScriptTransform, before the receive jitter buffer), decoded at once with WebCodecs in a
 * worker, and shown through a MediaStreamTrackGenerator track, which the <video> element renders as it comes (no
 * render-time scheduling). The frames still go on to libwebrtc unchanged, so its own receive path (key-frame
 * requests on loss, stats) keeps working; its decoded track is just not shown.
 *
 * Measured on loopback (benchmarks/results/glass-to-glass.json): this removes the receive jitter buffer and the
 * smoothing wait from the glass-to-glass delay. The price is smoothness under network jitter, which is why the
 * `smooth` mode (broadcast, OBS) does not use it.
 *
 * Loss: a frame whose references were not decoded (a lost frame) is skipped until the next key frame (libwebrtc
 * asks the sender for one when its own decode breaks). A decoder error that is not a loss makes the path give up:
 * `onFailed` is called once and the caller shows libwebrtc's own track again.
 *
 * Only VP8 (what the server sends everywhere) is decoded; anything else fails the path at its first frame.
 */

// The worker, as source: it runs from a blob URL, so that the page bundles stay one file each.
const WORKER_SOURCE = `
'use strict';
let decoder = null;
let waitKey = true;
let failed = false;
const decodedIds = new Set();
const stats = { received: 0, decoded: 0, skipped: 0 };
function fail(why) {
  if (failed) return;
  failed = true;
  try { if (decoder && decoder.state !== 'closed') decoder.close(); } catch (e) {}
  decoder = null;
  self.postMessage({ failed: why });
}
function open() {
  decoder = new VideoDecoder({
    output: (frame) => {
      stats.decoded++;
      self.postMessage({ frame, stats }, [frame]);
    },
    error: (e) => fail('decoder: ' + (e && e.message ? e.message : String(e))),
  });
  decoder.configure({ codec: 'vp8', optimizeForLatency: true });
}
function feed(frame) {
  stats.received++;
  if (stats.received === 1) self.postMessage({ stats });
  if (failed) return;
  const meta = frame.getMetadata();
  if (meta.mimeType && meta.mimeType.toLowerCase() !== 'video/vp8') return fail('codec ' + meta.mimeType);
  const key = frame.type === 'key';
  const deps = meta.dependencies || [];
  // A lost frame breaks the chain of references: skip to the next key frame.
  if (!key && (waitKey || deps.some((d) => !decodedIds.has(d)))) {
    waitKey = true;
    stats.skipped++;
    return;
  }
  if (!decoder) open();
  if (key) { waitKey = false; decodedIds.clear(); }
  if (meta.frameId !== undefined) {
    decodedIds.add(meta.frameId);
    if (decodedIds.size > 512) decodedIds.delete(decodedIds.values().next().value);
  }
  decoder.decode(new EncodedVideoChunk({ type: frame.type, timestamp: frame.timestamp, data: frame.data }));
}
self.onrtctransform = (event) => {
  const t = event.transformer;
  t.readable
    .pipeThrough(new TransformStream({
      transform(frame, controller) {
        try { feed(frame); } catch (e) { fail('feed: ' + (e && e.message ? e.message : String(e))); }
        controller.enqueue(frame);
      },
    }))
    .pipeTo(t.writable)
    .catch(() => {}); // the pipe ends when the receiver closes: nothing left to do
};
`;

type TrackGenerator = MediaStreamTrack & { writable: WritableStream<VideoFrame> };
type TrackGeneratorCtor = new (init: { kind: 'video' }) => TrackGenerator;
type ScriptTransformCtor = new (worker: Worker, options?: unknown) => unknown;

interface Globals {
  RTCRtpScriptTransform?: ScriptTransformCtor;
  MediaStreamTrackGenerator?: TrackGeneratorCtor;
  VideoDecoder?: unknown;
  EncodedVideoChunk?: unknown;
}

/** Whether this browser has what the path needs (Chromium: yes; elsewhere the low mode uses the normal path). */
export function fastVideoSupported(): boolean {
  const g = globalThis as unknown as Globals;
  return (
    typeof g.RTCRtpScriptTransform === 'function' &&
    typeof g.MediaStreamTrackGenerator === 'function' &&
    typeof g.VideoDecoder === 'function' &&
    typeof g.EncodedVideoChunk === 'function' &&
    typeof Worker === 'function'
  );
}

/** Counters of the path (tests, diagnostics). */
export interface FastVideoStats {
  /** Encoded frames seen. */
  received: number;
  /** Frames decoded and handed to the shown track. */
  decoded: number;
  /** Frames skipped while waiting for a key frame (loss). */
  skipped: number;
  /** Decoded frames dropped because the shown track was still busy with the previous one. */
  dropped: number;
}

let workerUrl: string | null = null;

/** One receiver's fast video path. Owns its worker and the generated track; `close()` is idempotent. */
export class FastVideo {
  /** The track to show instead of the receiver's own. */
  readonly track: MediaStreamTrack;
  readonly #worker: Worker;
  readonly #writer: WritableStreamDefaultWriter<VideoFrame>;
  readonly #stats: FastVideoStats = { received: 0, decoded: 0, skipped: 0, dropped: 0 };
  #closed = false;
  #failure: string | null = null;

  private constructor(worker: Worker, track: TrackGenerator, onFailed: (why: string) => void) {
    this.#worker = worker;
    this.track = track;
    this.#writer = track.writable.getWriter();
    worker.onmessage = (e: MessageEvent<{ frame?: VideoFrame; stats?: FastVideoStats; failed?: string }>) => {
      const { frame, stats, failed } = e.data;
      if (stats) {
        this.#stats.received = stats.received;
        this.#stats.decoded = stats.decoded;
        this.#stats.skipped = stats.skipped;
      }
      if (frame) {
        // Never queue: a frame the track has not taken yet is replaced by the newer one (latest wins).
        if (this.#closed || (this.#writer.desiredSize !== null && this.#writer.desiredSize <= 0)) {
          frame.close();
          this.#stats.dropped++;
        } else {
          this.#writer.write(frame).catch(() => frame.close());
        }
      }
      if (failed !== undefined) this.#fail(failed, onFailed);
    };
    worker.onerror = (e) => this.#fail(`worker: ${e.message}`, onFailed);
  }

  /**
   * Starts the path on a video receiver; null when the browser lacks the APIs. `onFailed` is called once if the
   * path gives up (an unsupported codec, a decoder error).
   */
  static attach(receiver: RTCRtpReceiver, onFailed: (why: string) => void): FastVideo | null {
    if (!fastVideoSupported()) return null;
    const g = globalThis as unknown as Required<Globals>;
    workerUrl ??= URL.createObjectURL(new Blob([WORKER_SOURCE], { type: 'text/javascript' }));
    const worker = new Worker(workerUrl);
    const track = new g.MediaStreamTrackGenerator({ kind: 'video' });
    const fast = new FastVideo(worker, track, onFailed);
    (receiver as unknown as { transform: unknown }).transform = new g.RTCRtpScriptTransform(worker, { kind: 'video' });
    return fast;
  }

  get closed(): boolean {
    return this.#closed;
  }
  /** Why the path gave up, or null. */
  get failure(): string | null {
    return this.#failure;
  }
  get stats(): FastVideoStats {
    return { ...this.#stats };
  }

  #fail(why: string, onFailed: (why: string) => void): void {
    if (this.#failure !== null) return;
    this.#failure = why;
    onFailed(why);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#worker.onmessage = null;
    this.#worker.onerror = null;
    this.#worker.terminate();
    this.#writer.close().catch(() => undefined);
    this.track.stop();
  }
}

/**
 * Starts a fast path on a video receiver that has not received anything yet (set the transform before the first
 * frame: Chromium does not hand frames to a transform set later) and returns it, or null when `fast` is false or the
 * browser lacks the APIs. If the path gives up, the receiver's own track replaces the path's track in `stream`.
 */
export function startFastVideo(receiver: RTCRtpReceiver, stream: MediaStream, fast: boolean): FastVideo | null {
  if (!fast) return null;
  const path = FastVideo.attach(receiver, () => {
    if (!path || path.closed) return;
    stream.removeTrack(path.track);
    if (!stream.getTracks().includes(receiver.track)) stream.addTrack(receiver.track);
  });
  return path;
}

/** Puts a received track into `stream`: the fast path's track instead of the receiver's own while the path works. */
export function showReceivedTrack(
  stream: MediaStream,
  track: MediaStreamTrack,
  fast: FastVideo | null | undefined,
): void {
  const shown = fast && fast.failure === null && !fast.closed ? fast.track : track;
  if (!stream.getTracks().includes(shown)) stream.addTrack(shown);
}
