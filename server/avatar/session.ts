/**
 * AvatarSession: hosts one avatar engine in a worker thread and supervises it.
 *
 * - Off the signaling loop: the engine runs in a `worker_threads` Worker, so a slow engine never stalls other rooms.
 * - Latest frame wins, through shared memory: driving frames are copied into an input FrameExchange (a lock-free
 *   triple buffer in a SharedArrayBuffer, server/avatar/mailbox.ts); while the worker is busy the newest frame
 *   replaces the waiting one and a drop is counted. The worker takes frames itself (it never waits for this thread
 *   between frames) and hands results back through an output FrameExchange allocated once per portrait size.
 * - Supervised: the worker must answer `init` within `initTimeoutMs`; if it crashes, the session emits 'failure',
 *   takes another worker, prepares the last portrait again and carries on; close() asks the worker to close and
 *   terminates it after `closeTimeoutMs`.
 * - Fast recovery: with a `pool` (workerPool.ts, one per server) the new worker is a warm spare whose engine is
 *   already loaded, and the portrait is prepared from the PortraitCache the first worker returned (kept here, in the
 *   main thread), so the face is not analysed again: frames are back within a few hundred ms. Without a pool a new
 *   worker is started (seconds). With a pool, close() hands the worker back for the next room instead of ending it.
 * - Restart policy, a token bucket: `maxRestarts` restarts in a burst (default 3), and one more every
 *   `restartRefillMs` (default 10 s). An engine that crashes now and then (every 20 s, say) is restarted every time; a
 *   crash loop (crashes faster than one per 10 s) spends the burst and the session gives up (failed) instead of
 *   restarting forever.
 * - Refiner steps: the engine runs AvatarSettings.steps only when it has a refiner (`refiner`, reported by the worker
 *   at init), and fewer under overload: a RefinerStepsPolicy (stepsPolicy.ts) watches render times and drops and
 *   lowers the steps before frames have to drop, raising them again after a while with headroom. `steps` is what
 *   runs now.
 *
 * Events: 'frame' (SessionFrame), 'dropped' (total: number, driving frames that were never published),
 * 'steps' (effective refiner steps: number, when the policy changed them), 'failure' (AppError),
 * 'restarted' (count: number), 'close'.
 */
import type { I420Frame, RgbImage } from '../types/image.js';
import type { EngineOptions, EngineWrapper, PortraitCache, PreparedPortrait, RenderStats } from './engineTypes.js';
import { FACE_ISSUES } from './engineTypes.js';
import type { AvatarSettings, PublicError, RefinerInfo } from '../types/protocol.js';
import { noRefiner } from '../types/protocol.js';
import type { ToWorker } from './worker.js';
import type { Logger } from '../logger.js';
import { AppError, InvalidStateError } from '../errors.js';
import { FrameExchange, Meta, SlotKind } from './mailbox.js';
import { MAX_EXPRESSION_BYTES } from '../types/expressionWire.js';
import { i420Bytes } from '../types/image.js';
import { RefinerStepsPolicy, type RefinerStepsPolicyOptions } from './stepsPolicy.js';
import {
  EngineWorker,
  type AvatarWorkerPool,
  type EngineSpec,
  type WorkerEvent,
  type WorkerReply,
} from './workerPool.js';
import { SafeEventEmitter } from '../util/events.js';

export interface AvatarSessionOptions {
  /** Engine name for createEngine() ('default', 'portrait', 'passthrough'). */
  engine: string;
  engineOptions: EngineOptions;
  /** Wraps the engine in its worker thread (tests: crashes, slow frames; see EngineWrapper); default none. */
  engineWrapper?: EngineWrapper;
  /** Deadline for the worker to start and create its engine; config.avatar.initTimeoutMs. */
  initTimeoutMs: number;
  /** Deadline for the worker to close before it is terminated; default 2000 ms. */
  closeTimeoutMs?: number;
  /** Restart budget (a token bucket): restarts allowed in a burst; default 3. */
  maxRestarts?: number;
  /** One restart is added back to the budget every restartRefillMs (up to maxRestarts); default 10_000 ms. */
  restartRefillMs?: number;
  /** Workers come from (and go back to) this pool; default none: the session starts and ends its own workers. */
  pool?: AvatarWorkerPool | null;
  /** How refiner steps are lowered under overload and raised again (defaults: a 30 fps frame budget). */
  stepsPolicy?: RefinerStepsPolicyOptions;
  log: Logger;
}

/** One synthesized frame. `frame.data` is a view on shared memory: valid only during the 'frame' listener call. */
export interface SessionFrame {
  frame: I420Frame;
  seq: number;
  /** When the driving frame was received (performance.now() ms), as given to pushFrame(). */
  receivedAt: number;
  /** Waiting in the mailbox, ms. */
  queueMs: number;
  /** Engine render time measured inside the worker, ms. */
  engineMs: number;
  /** Render start in the worker -> result back on the main thread (engine + hand-over), ms. */
  roundTripMs: number;
  stats: RenderStats;
}

function appError(e: PublicError, fallback: string): AppError {
  return new AppError(e.code ?? 'ENGINE_FAILED', e.message || fallback);
}

/** What an AvatarSession emits. */
export interface AvatarSessionEvents {
  /** One synthesized frame (its data is valid only during the listener call). */
  frame: [frame: SessionFrame];
  /** The cumulative count of driving frames dropped (replaced before the worker took them). */
  dropped: [total: number];
  /** The refiner steps that run changed (the steps policy under overload, or the settings). */
  steps: [steps: number];
  /** A frame failed to render, or the worker crashed (restarting, or stopped). */
  failure: [err: AppError];
  /** The worker was replaced after a crash and prepared the portrait again (restarts so far). */
  restarted: [restarts: number];
  /** Emitted once, by close(). */
  close: [];
}

export class AvatarSession extends SafeEventEmitter<AvatarSessionEvents> {
  readonly #opts: Required<Omit<AvatarSessionOptions, 'log' | 'engineWrapper'>> & { log: Logger };
  readonly #log: Logger;
  readonly #spec: EngineSpec;
  #worker: EngineWorker | null = null;
  #ready = false;
  #closed = false;
  #failed = false;
  #closing: Promise<void> | null = null;
  #restarts = 0;
  /** Restart tokens (see the header), as of #tokensAt (performance.now()). */
  #tokens: number;
  #tokensAt = performance.now();

  // Frames.
  #input: FrameExchange | null = null;
  #output: FrameExchange | null = null;
  #prepared: PreparedPortrait | null = null;
  #portrait: RgbImage | null = null;
  /** What the engine computed from #portrait (PreparedPortrait.cache): a new worker prepares from it. */
  #cache: PortraitCache | null = null;
  #settings: AvatarSettings | null = null;
  #seq = 0;
  #dropped = 0;
  /** The worker's cumulative count of output frames this thread never took (per output buffer). */
  #outDropped = 0;
  #outFrame: I420Frame = { width: 0, height: 0, data: new Uint8Array(0) };
  #renderErrors = 0;
  #lastRenderErrorAt = -Infinity;
  // Refiner steps.
  #refiner: RefinerInfo = noRefiner;
  #expressions = false;
  readonly #policy: RefinerStepsPolicy;

  private constructor(opts: AvatarSessionOptions) {
    super();
    this.#opts = {
      closeTimeoutMs: 2000,
      maxRestarts: 3,
      restartRefillMs: 10_000,
      stepsPolicy: {},
      pool: null,
      ...opts,
    };
    this.#log = opts.log;
    this.#spec = {
      engine: opts.engine,
      options: opts.engineOptions,
      ...(opts.engineWrapper ? { wrapper: opts.engineWrapper } : {}),
    };
    this.#tokens = this.#opts.maxRestarts;
    this.#policy = new RefinerStepsPolicy(this.#opts.stepsPolicy);
  }

  /** Starts the worker and its engine. @throws AppError('ENGINE_FAILED') on init timeout or engine error. */
  static async create(opts: AvatarSessionOptions): Promise<AvatarSession> {
    const s = new AvatarSession(opts);
    try {
      await s.#start();
    } catch (err) {
      await s.close();
      throw err;
    }
    return s;
  }

  get closed(): boolean {
    return this.#closed;
  }
  /** Whether the session gave up after too many crashes. */
  get failed(): boolean {
    return this.#failed;
  }
  get prepared(): PreparedPortrait | null {
    return this.#prepared;
  }
  /** Driving frames that were never published: replaced in the mailbox before the worker took them, or rendered
   * but replaced before this thread took the result. */
  get dropped(): number {
    return this.#dropped;
  }
  get restarts(): number {
    return this.#restarts;
  }
  /** What the engine can do with AvatarSettings.steps (known once the worker started). */
  get refiner(): RefinerInfo {
    return this.#refiner;
  }
  /** Refiner steps the engine runs now: the settings' steps, 0 without a refiner, lowered under overload. */
  get steps(): number {
    return this.#policy.effective;
  }
  /** The worker's thread id (tests check that it is gone after close), or null. */
  get workerThreadId(): number | null {
    return this.#worker?.threadId ?? null;
  }

  /** Prepares a portrait (per-portrait work in the engine); frames render at the returned size afterwards. */
  async prepare(portrait: RgbImage): Promise<PreparedPortrait> {
    this.#assertOpen();
    const reply = await this.#prepareOn(portrait, null);
    this.#portrait = { width: portrait.width, height: portrait.height, data: portrait.data.slice() };
    return reply;
  }

  /**
   * Offers a driving frame (copied). If the worker is busy, it waits in the mailbox, replacing (and counting as
   * dropped) any frame already waiting. Frames before the first prepare() are ignored.
   * @returns the frame's sequence number (echoed in SessionFrame.seq), or -1 when the frame was ignored.
   */
  pushFrame(frame: I420Frame, receivedAt: number = performance.now()): number {
    if (this.#closed || this.#failed || !this.#prepared) return -1;
    const bytes = i420Bytes(frame.width, frame.height);
    if (frame.data.length < bytes) throw new TypeError('AvatarSession.pushFrame: buffer smaller than the frame size');
    if (!this.#input || this.#input.capacity < bytes) this.#allocInput(bytes);
    const input = this.#input!;
    const slot = input.writable();
    slot.data.set(frame.data.subarray(0, bytes));
    const seq = ++this.#seq;
    const m = slot.meta;
    m[Meta.seq] = seq;
    m[Meta.width] = frame.width;
    m[Meta.height] = frame.height;
    m[Meta.bytes] = bytes;
    m[Meta.receivedAt] = receivedAt;
    m[Meta.kind] = SlotKind.frame;
    if (input.publish()) this.#countDrops(1);
    if (this.#ready) this.#post({ type: 'kick' });
    return seq;
  }

  /**
   * Private mode: offers an expression message (expressionWire.ts, already validated by the receiver; copied) through
   * the same latest-frame-wins mailbox as the video frames: a message the worker did not take before the next one
   * arrived is replaced and counted as dropped. The engine renders it without tracking (AvatarEngine.renderTrack).
   * @param capturedAt the capture time on this thread's performance.now() clock (the engine's timestamp).
   * @returns the sequence number (SessionFrame.seq), or -1 when ignored (before the first prepare(), or closed).
   * @throws AppError('UNSUPPORTED') when the engine cannot render from expressions (see {@link expressions}).
   */
  pushExpression(msg: Uint8Array, capturedAt: number, receivedAt: number = performance.now()): number {
    if (this.#closed || this.#failed || !this.#prepared) return -1;
    if (!this.#expressions) throw new AppError('UNSUPPORTED', 'this avatar engine cannot render from expressions');
    if (msg.length > MAX_EXPRESSION_BYTES) throw new TypeError('AvatarSession.pushExpression: message too long');
    if (!this.#input || this.#input.capacity < MAX_EXPRESSION_BYTES) this.#allocInput(MAX_EXPRESSION_BYTES);
    const input = this.#input!;
    const slot = input.writable();
    slot.data.set(msg);
    const seq = ++this.#seq;
    const m = slot.meta;
    m[Meta.seq] = seq;
    m[Meta.width] = 0;
    m[Meta.height] = 0;
    m[Meta.bytes] = msg.length;
    m[Meta.receivedAt] = receivedAt;
    m[Meta.kind] = SlotKind.expression;
    m[Meta.capturedAt] = capturedAt;
    if (input.publish()) this.#countDrops(1);
    if (this.#ready) this.#post({ type: 'kick' });
    return seq;
  }

  /** Whether the engine renders from expression messages (private mode); known once the worker started. */
  get expressions(): boolean {
    return this.#expressions;
  }

  /** Sends the settings to the engine, with `steps` replaced by what the engine can and should run now. */
  updateSettings(settings: AvatarSettings): void {
    if (this.#closed) return;
    this.#settings = { ...settings };
    this.#requestSteps();
    this.#postSettings();
  }

  recalibrate(): void {
    if (this.#closed) return;
    this.#post({ type: 'recalibrate' });
  }

  /**
   * Closes the engine and the worker (terminated after closeTimeoutMs), or with a pool hands the worker back to it.
   * Idempotent; emits 'close' once.
   */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closed = true;
    this.#closing = (async () => {
      const w = this.#worker;
      this.#worker = null;
      this.#ready = false;
      // Synchronously, so that a pool closed right after this (server shutdown) waits for the release.
      if (w) {
        w.detach(new InvalidStateError('avatar session closed'));
        await this.#giveBack(w);
      }
      this.safeEmit('close');
    })();
    return this.#closing;
  }

  /** A worker this session no longer uses: back to the pool, or closed. */
  #giveBack(w: EngineWorker): Promise<void> {
    const pool = this.#opts.pool;
    return pool ? pool.release(w) : w.close(this.#opts.closeTimeoutMs);
  }

  #assertOpen(): void {
    if (this.#closed) throw new InvalidStateError('avatar session closed');
    if (this.#failed) throw new AppError('ENGINE_FAILED', 'avatar engine failed repeatedly and was stopped');
  }

  /** Prepares `portrait` on the worker, from `cache` when given (the same portrait, prepared by an earlier worker). */
  async #prepareOn(portrait: RgbImage, cache: PortraitCache | null): Promise<PreparedPortrait> {
    // A copy is transferred: the caller keeps its image, and the worker gets it without a structured-clone copy.
    const data = portrait.data.slice().buffer;
    const reply = await this.#request(
      (id) => ({
        type: 'prepare',
        id,
        width: portrait.width,
        height: portrait.height,
        data,
        ...(cache ? { cache } : {}),
      }),
      [data],
    );
    if (!reply.prepared || !reply.output) throw new AppError('ENGINE_FAILED', 'avatar worker: bad prepare reply');
    this.#output = new FrameExchange(reply.output.capacity, reply.output.buffer);
    this.#outDropped = 0;
    const { cache: next, ...prepared } = reply.prepared;
    this.#cache = next ?? null;
    this.#prepared = prepared;
    return prepared;
  }

  /** A new input exchange (for a larger driving frame, or for a new worker: slot ownership starts afresh). */
  #allocInput(bytes: number): void {
    this.#input = new FrameExchange(bytes);
    this.#post({ type: 'input', buffer: this.#input.buffer, capacity: bytes });
  }

  #countDrops(n: number): void {
    this.#dropped += n;
    this.#policy.dropped(n);
    this.safeEmit('dropped', this.#dropped);
  }

  /** Hands the settings' steps, bounded by the refiner, to the policy (a new request only when it differs). */
  #requestSteps(): void {
    const r = this.#refiner;
    const want = r.available ? Math.min(this.#settings?.steps ?? 0, r.maxSteps) : 0;
    if (want !== this.#policy.requested && this.#policy.request(want)) this.safeEmit('steps', this.#policy.effective);
  }

  #postSettings(): void {
    if (this.#settings)
      this.#post({ type: 'settings', settings: { ...this.#settings, steps: this.#policy.effective } });
  }

  /** Takes a worker (from the pool, or a new one) and sends it the settings. @throws AppError('ENGINE_FAILED') */
  async #start(): Promise<void> {
    const pool = this.#opts.pool;
    // A pooled worker can die between the pool's hand-over and attach(): take another (a few times at most).
    for (let attempt = 0; attempt < 3; attempt++) {
      const w = pool
        ? await pool.acquire(this.#spec)
        : await EngineWorker.start(this.#spec, { initTimeoutMs: this.#opts.initTimeoutMs, log: this.#log });
      if (this.#closed) {
        await this.#giveBack(w);
        throw new InvalidStateError('avatar session closed');
      }
      if (!w.attach({ onMessage: (m) => this.#onMessage(w, m), onCrash: (err) => this.#onCrash(w, err) })) continue;
      this.#worker = w;
      this.#refiner = w.refiner;
      this.#expressions = w.expressions;
      this.#requestSteps();
      this.#postSettings();
      this.#ready = true;
      return;
    }
    throw new AppError('ENGINE_FAILED', 'avatar worker died as it started');
  }

  #request(make: (id: number) => ToWorker, transfer: ArrayBuffer[] = []): Promise<WorkerReply> {
    const w = this.#worker;
    if (!w) return Promise.reject(new InvalidStateError('avatar worker not running'));
    return w.request(make, transfer);
  }

  #post(msg: ToWorker): void {
    this.#worker?.post(msg);
  }

  #onMessage(w: EngineWorker, msg: WorkerEvent): void {
    if (w !== this.#worker) return;
    switch (msg.type) {
      case 'frame': {
        const output = this.#output;
        // Null when an earlier 'frame' message already took the newest result.
        const f = output?.take();
        if (!f) return;
        const m = f.meta;
        const outDropped = m[Meta.outDropped]!;
        if (outDropped > this.#outDropped) {
          this.#countDrops(outDropped - this.#outDropped);
          this.#outDropped = outDropped;
        }
        this.#outFrame.width = m[Meta.width]!;
        this.#outFrame.height = m[Meta.height]!;
        this.#outFrame.data = f.data;
        const startedAt = m[Meta.startedAt]!;
        const receivedAt = m[Meta.receivedAt]!;
        const engineMs = m[Meta.renderMs]!;
        const refineMs = m[Meta.refineMs]!;
        const out: SessionFrame = {
          frame: this.#outFrame,
          seq: m[Meta.seq]!,
          receivedAt,
          queueMs: Math.max(0, startedAt - receivedAt),
          engineMs,
          roundTripMs: Math.max(0, performance.now() - startedAt),
          stats: {
            trackMs: m[Meta.trackMs]!,
            latentMs: m[Meta.latentMs]!,
            generateMs: m[Meta.generateMs]!,
            pasteMs: m[Meta.pasteMs]!,
            ...(refineMs >= 0 ? { refineMs } : {}),
            face: m[Meta.face] === 1,
            ...(m[Meta.faceIssue]! > 0 ? { faceIssue: FACE_ISSUES[m[Meta.faceIssue]! - 1] } : {}),
          },
        };
        this.safeEmit('frame', out);
        this.#onRendered(engineMs, refineMs >= 0 ? refineMs : undefined);
        return;
      }
      case 'renderError': {
        // A broken engine fails every frame: report at most once a second, with the count since the last report.
        this.#renderErrors++;
        const now = performance.now();
        if (now - this.#lastRenderErrorAt >= 1000) {
          this.#lastRenderErrorAt = now;
          this.#log.warn('avatar engine failed to render', { frames: this.#renderErrors, code: msg.error.code });
          this.#renderErrors = 0;
          this.safeEmit('failure', appError(msg.error, 'avatar engine failed to render a frame'));
        }
        return;
      }
    }
  }

  /** Feeds the steps policy; a change goes to the engine at once (the next frame renders with it). */
  #onRendered(engineMs: number, refineMs: number | undefined): void {
    const before = this.#policy.effective;
    const steps = this.#policy.rendered(engineMs, refineMs);
    if (steps === null || this.#closed) return;
    this.#log.info(steps < before ? 'overloaded: refiner steps lowered' : 'headroom: refiner steps raised', {
      from: before,
      to: steps,
      requested: this.#policy.requested,
    });
    this.#postSettings();
    this.safeEmit('steps', steps);
  }

  /** Takes a restart token if there is one (the bucket refills one token per restartRefillMs, up to maxRestarts). */
  #takeRestartToken(): boolean {
    const now = performance.now();
    const { maxRestarts, restartRefillMs } = this.#opts;
    this.#tokens = Math.min(maxRestarts, this.#tokens + (now - this.#tokensAt) / restartRefillMs);
    this.#tokensAt = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  #onCrash(w: EngineWorker, err: Error): void {
    if (w !== this.#worker || this.#closed) return;
    this.#worker = null;
    this.#ready = false;
    // Frames are ignored until the new worker has prepared the portrait again; both exchanges start afresh (the
    // dead worker's slot ownership is unknown).
    this.#prepared = null;
    this.#output = null;
    this.#input = null;
    this.#log.error('avatar worker crashed', { err });
    if (!this.#takeRestartToken()) {
      this.#failed = true;
      this.safeEmit('failure', new AppError('ENGINE_FAILED', 'avatar engine crashed repeatedly and was stopped'));
      return;
    }
    this.safeEmit('failure', new AppError('ENGINE_FAILED', 'avatar engine crashed: restarting'));
    void this.#restart();
  }

  async #restart(): Promise<void> {
    const t0 = performance.now();
    try {
      await this.#start();
      if (this.#closed) return;
      if (this.#portrait) await this.#prepareOn(this.#portrait, this.#cache);
      this.#restarts++;
      this.#log.info('avatar worker restarted', { restarts: this.#restarts, ms: Math.round(performance.now() - t0) });
      this.safeEmit('restarted', this.#restarts);
    } catch (err) {
      if (this.#closed) return;
      this.#failed = true;
      const w = this.#worker;
      this.#worker = null;
      this.#ready = false;
      if (w) {
        w.detach(new InvalidStateError('avatar session failed'));
        void w.terminate();
      }
      this.#log.error('avatar worker restart failed', { err: err as Error });
      this.safeEmit('failure', new AppError('ENGINE_FAILED', 'avatar engine could not be restarted', { cause: err }));
    }
  }
}
