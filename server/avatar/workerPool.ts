/**
 * Avatar worker threads with their engine loaded (EngineWorker), and a pool of them shared by the rooms of one server
 * (AvatarWorkerPool).
 *
 * Why a pool. Starting a worker is the slow part of a room's start and of its recovery from a crash: the module
 * graph, the ONNX sessions and the 68-point predictor take about a second of CPU on an idle core and several on a
 * busy one, before the portrait is analysed again. And every thread that loaded the default engine and ended left
 * native memory behind (glibc malloc arenas fragmented by the engine's large buffers): benchmarks/churn.ts measured
 * the server's RSS growing by ~25 MB per room created and closed, with no worker thread left running.
 *
 * - acquire(spec): an idle worker whose engine was created with the same engine name and options (the spec), else a
 *   spare that is starting, else a new one.
 * - release(worker): the session ended; the worker is reset (engine.reset(): the portrait, the performer and the
 *   settings forgotten, the models kept, its garbage collected) and kept idle for the next room, up to `maxIdle` per
 *   spec; beyond that, or when the reset fails or times out, it is closed. Idle workers beyond the spares are closed
 *   after `idleTimeoutMs`: rooms that close and open again within that time reuse threads instead of ending some and
 *   starting others (each thread that loaded the engine and ended left ~1.5 MB behind even with large allocations
 *   mmapped; ~25 MB without: see benchmarks/churn.ts), and a quiet server gives the memory back.
 * - spares: the pool keeps `spares` idle workers per spec warm. After an acquire() took one, a replacement starts
 *   `spareDelayMs` later, so that its start does not take the CPU from the room that just got a worker (e.g. one
 *   recovering from a crash: AvatarSession takes a spare, prepares the portrait from its PortraitCache, and renders
 *   again within a few hundred ms instead of seconds).
 * - An idle worker that crashes is dropped. close() closes the idle and starting workers and waits for the releases
 *   under way; workers that sessions hold are theirs to release (into a closed pool: closed at once).
 */
import { Worker } from 'node:worker_threads';
import type { RefinerInfo } from '../types/protocol.js';
import { noRefiner } from '../types/protocol.js';
import type { EngineOptions, EngineWrapper } from './engineTypes.js';
import type { FromWorker, ToWorker } from './worker.js';
import type { Logger } from '../logger.js';
import { getLogLevel } from '../logger.js';
import { AppError, InvalidStateError } from '../errors.js';
import { workerSpec } from '../util/worker.js';
import type { SharedEngineData } from './engines/shared.js';

/** What a worker's engine is created from: workers of equal specs are interchangeable. */
export interface EngineSpec {
  /** Engine name for createEngine() ('default', 'portrait', 'passthrough'). */
  engine: string;
  options: EngineOptions;
  /** Wraps the engine in the worker (tests); absent in production. */
  wrapper?: EngineWrapper;
}

/** A reply to a request (init, prepare, reset, close). */
export type WorkerReply = FromWorker & { type: 'reply'; ok: true };
/** The worker's other messages ('frame', 'renderError'). */
export type WorkerEvent = Exclude<FromWorker, { type: 'reply' }>;

/** Who the worker reports to now: a session, or the pool while it is idle. */
export interface WorkerOwner {
  onMessage(msg: WorkerEvent): void;
  /** The thread died (uncaught exception or exit) while this owner held it. */
  onCrash(err: Error): void;
}

interface Request {
  resolve: (msg: WorkerReply) => void;
  reject: (err: AppError) => void;
}

/** The key of a spec: engine name, options (as JSON with sorted keys) and wrapper. */
export function specKey(spec: EngineSpec): string {
  const o = spec.options as unknown as Record<string, unknown>;
  return JSON.stringify([
    spec.engine,
    Object.keys(o)
      .sort()
      .map((k) => [k, o[k]]),
    spec.wrapper ?? null,
  ]);
}

/**
 * One avatar worker thread with its engine created (`init` answered). Requests are matched to replies by id; a
 * crash rejects the pending ones and is reported to the owner. `close()`/`terminate()` are idempotent and end the
 * thread without reporting a crash.
 */
export class EngineWorker {
  readonly key: string;
  readonly #worker: Worker;
  readonly #log: Logger;
  readonly #exited: Promise<void>;
  #refiner: RefinerInfo = noRefiner;
  #expressions = false;
  #shared: SharedEngineData | null = null;
  #owner: WorkerOwner | null = null;
  readonly #requests = new Map<number, Request>();
  #nextId = 1;
  #dead = false;
  #ending = false;

  private constructor(spec: EngineSpec, log: Logger) {
    this.key = specKey(spec);
    this.#log = log;
    const ws = workerSpec(import.meta.url, 'worker');
    this.#worker = new Worker(ws.entry, { eval: ws.eval, name: 'avatar-engine' });
    this.#exited = new Promise((resolve) => this.#worker.once('exit', () => resolve()));
    this.#worker.on('message', (msg: FromWorker) => this.#onMessage(msg));
    this.#worker.on('error', (err) => this.#onDeath(err));
    this.#worker.on('exit', (code) => this.#onDeath(new Error(`avatar worker exited with code ${code}`)));
  }

  /**
   * Starts a worker and creates its engine.
   * @throws AppError('ENGINE_FAILED') on init timeout or engine error (the thread is terminated).
   */
  static async start(
    spec: EngineSpec,
    opts: { initTimeoutMs: number; log: Logger; shared?: SharedEngineData; onSpawn?: (w: EngineWorker) => void },
  ): Promise<EngineWorker> {
    const shared = opts.shared;
    const w = new EngineWorker(spec, opts.log);
    // The thread runs from here (a pool that closes meanwhile terminates it rather than waiting for its engine).
    opts.onSpawn?.(w);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new AppError('ENGINE_FAILED', `avatar engine did not start within ${opts.initTimeoutMs} ms`)),
        opts.initTimeoutMs,
      );
    });
    try {
      const reply = await Promise.race([
        w.request((id) => ({
          type: 'init',
          id,
          engine: spec.engine,
          options: spec.options,
          ...(spec.wrapper ? { wrapper: spec.wrapper } : {}),
          ...(shared ? { shared } : {}),
          mainTimeOrigin: performance.timeOrigin,
          logLevel: getLogLevel(),
        })),
        timeout,
      ]);
      w.#refiner = reply.refiner ?? noRefiner;
      w.#expressions = reply.expressions === true;
      w.#shared = reply.shared ?? null;
    } catch (err) {
      await w.terminate();
      throw err;
    } finally {
      clearTimeout(timer);
    }
    return w;
  }

  /** Whether the thread runs (not crashed, not closed). */
  get alive(): boolean {
    return !this.#dead && !this.#ending;
  }
  get threadId(): number {
    return this.#worker.threadId;
  }
  /** Resolves when the thread has exited (closed, terminated or crashed). */
  get exited(): Promise<void> {
    return this.#exited;
  }
  /** What the engine can do with AvatarSettings.steps (from `init`). */
  get refiner(): RefinerInfo {
    return this.#refiner;
  }
  /** Whether the engine renders from expression messages (private mode: AvatarEngine.renderTrack). */
  get expressions(): boolean {
    return this.#expressions;
  }
  /** Model data this worker loaded for later workers to share (engines/shared.ts), when it was started without. */
  get shared(): SharedEngineData | null {
    return this.#shared;
  }

  /** Makes `owner` the receiver of messages and crashes. Returns false (and attaches nothing) when the thread died. */
  attach(owner: WorkerOwner): boolean {
    if (!this.alive) return false;
    this.#owner = owner;
    return true;
  }

  /** No owner any more; pending requests reject with `reason`. */
  detach(reason: AppError): void {
    this.#owner = null;
    this.#rejectAll(reason);
  }

  request(make: (id: number) => ToWorker, transfer: ArrayBuffer[] = []): Promise<WorkerReply> {
    if (!this.alive) return Promise.reject(new InvalidStateError('avatar worker not running'));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#requests.set(id, { resolve, reject });
      this.#worker.postMessage(make(id), transfer);
    });
  }

  post(msg: ToWorker): void {
    if (this.alive) this.#worker.postMessage(msg);
  }

  /** Asks the worker to forget its session (see ToWorker 'reset'). Resolves true when it is ready for another. */
  async reset(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((r) => (timer = setTimeout(() => r(false), timeoutMs)));
    try {
      const ok = await Promise.race([this.request((id) => ({ type: 'reset', id })).then(() => true), timeout]);
      return ok && this.alive;
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Asks the engine to close, waits up to `timeoutMs` for the thread to exit, then terminates it. Idempotent. */
  async close(timeoutMs: number): Promise<void> {
    if (this.#ending || this.#dead) return this.terminate();
    this.#ending = true;
    this.#owner = null;
    this.#worker.postMessage({ type: 'close', id: this.#nextId++ } satisfies ToWorker);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs)));
    if ((await Promise.race([this.#exited, late])) === 'timeout')
      this.#log.warn('avatar worker did not close in time: terminating');
    clearTimeout(timer);
    await this.terminate();
  }

  /** Ends the thread at once (no crash reported). Idempotent. */
  async terminate(): Promise<void> {
    this.#ending = true;
    this.#owner = null;
    this.#rejectAll(new InvalidStateError('avatar worker closed'));
    await this.#worker.terminate();
  }

  #onMessage(msg: FromWorker): void {
    if (msg.type === 'reply') {
      const req = this.#requests.get(msg.id);
      if (!req) return;
      this.#requests.delete(msg.id);
      if (msg.ok) req.resolve(msg);
      else req.reject(new AppError(msg.error.code ?? 'ENGINE_FAILED', msg.error.message || 'avatar engine error'));
      return;
    }
    this.#owner?.onMessage(msg);
  }

  #onDeath(err: Error): void {
    if (this.#dead) return;
    this.#dead = true;
    if (this.#ending) return;
    this.#rejectAll(new AppError('ENGINE_FAILED', 'avatar engine crashed', { cause: err }));
    const owner = this.#owner;
    this.#owner = null;
    void this.#worker.terminate();
    owner?.onCrash(err);
  }

  #rejectAll(err: AppError): void {
    for (const r of this.#requests.values()) r.reject(err);
    this.#requests.clear();
  }
}

export interface AvatarWorkerPoolOptions {
  /** Idle workers kept warm per spec (for the next room, and for a room whose worker crashed); default 1. */
  spares?: number;
  /** Most idle workers kept per spec (e.g. config.maxRooms); workers of closed rooms beyond it are closed. Default 8. */
  maxIdle?: number;
  /** Idle workers beyond `spares` are closed after this long idle, ms; default 60_000. */
  idleTimeoutMs?: number;
  /** Delay before a spare is started after one was taken, ms; default 2000. */
  spareDelayMs?: number;
  /** Deadline for a worker's engine to start (config.avatar.initTimeoutMs), ms. */
  initTimeoutMs: number;
  /** Deadline for a returned worker to reset, or for a worker to close before it is terminated, ms; default 2000. */
  closeTimeoutMs?: number;
  log: Logger;
}

interface Entry {
  spec: EngineSpec;
  /** Most recently idle last (acquire() takes it; the older ones time out first). */
  idle: EngineWorker[];
  /** Spares being started (null: the start failed). */
  starting: Promise<EngineWorker | null>[];
  timer: NodeJS.Timeout | null;
}

/** See the module header. */
export class AvatarWorkerPool {
  readonly #opts: Required<Omit<AvatarWorkerPoolOptions, 'log'>>;
  readonly #log: Logger;
  readonly #entries = new Map<string, Entry>();
  readonly #pending = new Set<Promise<unknown>>();
  /** Idle-timeout timers of idle workers. */
  readonly #idleTimers = new Map<EngineWorker, NodeJS.Timeout>();
  #closed = false;
  #started = 0;
  #reused = 0;
  /** Threads this pool started that have not exited (idle, starting, or held by sessions). */
  readonly #live = new Set<EngineWorker>();
  /** Threads whose engine is being created (EngineWorker.start() not settled). */
  readonly #spawning = new Set<EngineWorker>();
  /** Model data the first worker of each engine loaded, handed to the later ones (engines/shared.ts). */
  readonly #shared = new Map<string, SharedEngineData>();

  constructor(opts: AvatarWorkerPoolOptions) {
    const spares = opts.spares ?? 1;
    if (!Number.isInteger(spares) || spares < 0) throw new TypeError('spares must be a non-negative integer');
    this.#opts = { spareDelayMs: 2000, closeTimeoutMs: 2000, maxIdle: 8, idleTimeoutMs: 60_000, ...opts, spares };
    this.#log = opts.log;
  }

  get closed(): boolean {
    return this.#closed;
  }
  /**
   * Workers started by this pool so far, acquire() calls answered with an idle or starting one, idle and starting
   * workers now, and `live`: the threads this pool started that have not exited (whoever holds them).
   */
  get stats(): { started: number; reused: number; idle: number; starting: number; live: number } {
    let idle = 0;
    let starting = 0;
    for (const e of this.#entries.values()) {
      idle += e.idle.length;
      starting += e.starting.length;
    }
    return { started: this.#started, reused: this.#reused, idle, starting, live: this.#live.size };
  }
  /** Thread ids of the idle workers (tests: a crashed session takes one of them). */
  idleThreadIds(): number[] {
    return [...this.#entries.values()].flatMap((e) => e.idle.map((w) => w.threadId));
  }

  /**
   * A worker for `spec`, owned by the caller until release(): idle, else a starting spare, else a new one.
   * @throws AppError('ENGINE_FAILED') when a new worker does not start; InvalidStateError when the pool is closed.
   */
  async acquire(spec: EngineSpec): Promise<EngineWorker> {
    if (this.#closed) throw new InvalidStateError('avatar worker pool closed');
    const e = this.#entry(spec);
    let w: EngineWorker | null = null;
    while (!w && e.idle.length > 0) w = this.#alive(e.idle.pop()!);
    while (!w && e.starting.length > 0) w = this.#alive(await e.starting.shift()!);
    if (w) this.#reused++;
    else w = await this.#start(spec);
    if (this.#closed) {
      await w.close(this.#opts.closeTimeoutMs);
      throw new InvalidStateError('avatar worker pool closed');
    }
    this.#topUp(e);
    return w;
  }

  /** Takes back a worker whose session ended (see the module header). Resolves once it is idle or closed. */
  release(w: EngineWorker): Promise<void> {
    const p = this.#release(w);
    this.#pending.add(p);
    void p.finally(() => this.#pending.delete(p));
    return p;
  }

  /** Closes the idle and starting workers, after the releases under way. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
    const all: Promise<void>[] = [];
    for (const e of this.#entries.values()) {
      if (e.timer) clearTimeout(e.timer);
      e.timer = null;
      for (const w of e.idle.splice(0)) {
        this.#clearIdleTimer(w);
        all.push(w.close(this.#opts.closeTimeoutMs));
      }
      for (const s of e.starting.splice(0)) all.push(s.then((w) => w?.close(this.#opts.closeTimeoutMs)));
    }
    // Workers whose engine is still starting are not waited for: their threads end now (their start() rejects).
    for (const w of this.#spawning) all.push(w.terminate());
    await Promise.allSettled(all);
  }

  async #release(w: EngineWorker): Promise<void> {
    const e = this.#entries.get(w.key);
    w.detach(new InvalidStateError('avatar session closed'));
    const ok = !this.#closed && e !== undefined && w.alive && (await w.reset(this.#opts.closeTimeoutMs));
    if (!ok || this.#closed || !e || e.idle.length >= this.#opts.maxIdle) {
      await w.close(this.#opts.closeTimeoutMs);
      return;
    }
    this.#idle(e, w);
  }

  #entry(spec: EngineSpec): Entry {
    const key = specKey(spec);
    let e = this.#entries.get(key);
    if (!e) {
      e = { spec, idle: [], starting: [], timer: null };
      this.#entries.set(key, e);
    }
    return e;
  }

  #alive(w: EngineWorker | null): EngineWorker | null {
    if (!w) return null;
    this.#clearIdleTimer(w);
    if (!w.alive) return null;
    w.detach(new InvalidStateError('avatar worker handed over'));
    return w;
  }

  #clearIdleTimer(w: EngineWorker): void {
    const t = this.#idleTimers.get(w);
    if (t) clearTimeout(t);
    this.#idleTimers.delete(w);
  }

  /** The pool owns an idle worker: a crash drops it. */
  #idle(e: Entry, w: EngineWorker): void {
    const attached = w.attach({
      onMessage: () => undefined,
      onCrash: (err) => {
        this.#clearIdleTimer(w);
        e.idle = e.idle.filter((x) => x !== w);
        this.#log.warn('idle avatar worker crashed: dropped', { err });
      },
    });
    if (!attached) return;
    e.idle.push(w);
    const timer = setTimeout(() => {
      this.#idleTimers.delete(w);
      if (!e.idle.includes(w) || e.idle.length <= this.#opts.spares) return;
      e.idle = e.idle.filter((x) => x !== w);
      void w.close(this.#opts.closeTimeoutMs);
    }, this.#opts.idleTimeoutMs);
    timer.unref();
    this.#idleTimers.set(w, timer);
  }

  async #start(spec: EngineSpec): Promise<EngineWorker> {
    this.#started++;
    let spawned: EngineWorker | null = null;
    const shared = this.#shared.get(spec.engine);
    try {
      const w = await EngineWorker.start(spec, {
        initTimeoutMs: this.#opts.initTimeoutMs,
        log: this.#log,
        ...(shared ? { shared } : {}),
        onSpawn: (w) => {
          spawned = w;
          this.#live.add(w);
          this.#spawning.add(w);
          void w.exited.then(() => this.#live.delete(w));
          if (this.#closed) void w.terminate();
        },
      });
      if (w.shared && !this.#shared.has(spec.engine)) this.#shared.set(spec.engine, w.shared);
      return w;
    } finally {
      if (spawned) this.#spawning.delete(spawned);
    }
  }

  /** Schedules spares up to `spares` idle or starting workers for this spec. */
  #topUp(e: Entry): void {
    if (this.#closed || e.timer || e.idle.length + e.starting.length >= this.#opts.spares) return;
    e.timer = setTimeout(() => {
      e.timer = null;
      while (!this.#closed && e.idle.length + e.starting.length < this.#opts.spares) {
        const s: Promise<EngineWorker | null> = this.#start(e.spec).then(
          (w) => {
            // Still a spare (not taken by acquire() meanwhile): it becomes idle.
            if (e.starting.includes(s)) {
              e.starting = e.starting.filter((x) => x !== s);
              if (this.#closed) void w.close(this.#opts.closeTimeoutMs);
              else this.#idle(e, w);
            }
            return w;
          },
          (err: unknown) => {
            e.starting = e.starting.filter((x) => x !== s);
            if (!this.#closed) this.#log.warn('spare avatar worker did not start', { err: err as Error });
            return null;
          },
        );
        e.starting.push(s);
      }
    }, this.#opts.spareDelayMs);
    e.timer.unref();
  }
}
