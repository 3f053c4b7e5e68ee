/**
 * The avatar worker thread: owns one engine, off the signaling loop. Driven by AvatarSession (session.ts).
 *
 * Frames travel through shared memory, never through messages: the main thread writes each driving frame into the
 * input FrameExchange (a latest-frame-wins triple buffer) and posts a tiny `kick`; the worker takes the newest frame
 * itself, renders it straight into its slot of the output FrameExchange (allocated once per prepared portrait size),
 * hands it over and posts `frame`. The worker never waits for the main thread between frames, and a busy main
 * thread only makes the worker skip to the newest frame.
 *
 * Messages are handled one at a time, in order (a prepare() that awaits is never overtaken by a render).
 *
 * A worker outlives its session when it is pooled (workerPool.ts): `reset` forgets the session (portrait, performer,
 * settings, buffers) and keeps the engine's models loaded for the next one.
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import { parentPort } from 'node:worker_threads';
import type { AvatarEngine, PortraitCache, PreparedPortrait, RenderStats, TrackedFrame } from './engineTypes.js';
import type { I420Frame } from '../types/image.js';
import { type EngineOptions, type EngineWrapper, FACE_ISSUES, type WrapEngine } from './engineTypes.js';
import type { AvatarSettings, PublicError, RefinerInfo } from '../types/protocol.js';
import { MAX_REFINER_STEPS, noRefiner } from '../types/protocol.js';
import { createEngine } from './engines/index.js';
import { adoptSharedEngineData, sharedEngineData, type SharedEngineData } from './engines/shared.js';
import { FrameExchange, Meta, SlotKind } from './mailbox.js';
import { createDecodedExpression, decodeExpression } from '../types/expressionWire.js';
import { i420Bytes } from '../types/image.js';
import { createLogger, setLogLevel, type LogLevel } from '../logger.js';
import { AppError, toPublicError } from '../errors.js';

/** Main thread -> worker. */
export type ToWorker =
  | {
      type: 'init';
      id: number;
      engine: string;
      options: EngineOptions;
      /** Wraps the engine (tests; see EngineWrapper). */
      wrapper?: EngineWrapper;
      /** Model data shared by the process's workers (engines/shared.ts). */
      shared?: SharedEngineData;
      mainTimeOrigin: number;
      logLevel: LogLevel;
    }
  | { type: 'input'; buffer: SharedArrayBuffer; capacity: number }
  | { type: 'prepare'; id: number; width: number; height: number; data: ArrayBuffer; cache?: PortraitCache }
  | { type: 'kick' }
  | { type: 'settings'; settings: AvatarSettings }
  | { type: 'recalibrate' }
  /** The session ended: forget it (engine.reset(), or a new engine), keep the models, wait for the next session. */
  | { type: 'reset'; id: number }
  | { type: 'close'; id: number };

/** Worker -> main thread. */
export type FromWorker =
  | {
      type: 'reply';
      id: number;
      ok: true;
      /** init: what the engine can do with AvatarSettings.steps. */
      refiner?: RefinerInfo;
      /** init: whether the engine renders from expression messages (AvatarEngine.renderTrack: private mode). */
      expressions?: boolean;
      /** init: model data this worker loaded that later workers can share (engines/shared.ts). */
      shared?: SharedEngineData;
      prepared?: PreparedPortrait;
      output?: { buffer: SharedArrayBuffer; capacity: number };
    }
  | { type: 'reply'; id: number; ok: false; error: PublicError }
  | { type: 'frame' }
  | { type: 'renderError'; error: PublicError };

const port = parentPort;
if (!port) throw new Error('avatar worker: must run in a worker thread');
const log = createLogger('avatar.worker');

let engine: AvatarEngine | null = null;
let input: FrameExchange | null = null;
let output: FrameExchange | null = null;
let outSize = { width: 0, height: 0 };
let outDropped = 0;
/** main clock = worker clock + clockOffset (both performance.now(), different time origins). */
let clockOffset = 0;
/** The init message: what a reset() recreates an engine that has no reset() from. */
let initMsg: (ToWorker & { type: 'init' }) | null = null;
let closed = false;
const driving: I420Frame = { width: 0, height: 0, data: new Uint8Array(0) };
const out: I420Frame = { width: 0, height: 0, data: new Uint8Array(0) };
/** Private mode: the expression message decoded (validated on the main thread already), its buffers reused. */
const expression = createDecodedExpression();
const tracked: TrackedFrame = { width: 0, height: 0, track: null };

/** Renders an expression message (private mode) through the engine's renderTrack. */
function renderExpression(e: AvatarEngine, data: Uint8Array, target: I420Frame, ts: number): RenderStats {
  if (!e.renderTrack) throw new AppError('UNSUPPORTED', `engine "${e.name}" cannot render from expressions`);
  const refusal = decodeExpression(data, expression);
  if (refusal) throw new AppError('INVALID_MESSAGE', `expression message refused: ${refusal}`);
  tracked.width = expression.width;
  tracked.height = expression.height;
  tracked.track = expression.track;
  return e.renderTrack(tracked, target, ts);
}

/** A full garbage collection of this thread's isolate (V8's gc() extension, enabled for this purpose). */
function fullGc(): void {
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
}

function post(msg: FromWorker): void {
  port!.postMessage(msg);
}

function fail(id: number, err: unknown): void {
  post({ type: 'reply', id, ok: false, error: toPublicError(err) });
}

/** Creates the engine an init message names, wrapped when it names a wrapper (EngineWrapper: tests). */
async function newEngine(msg: ToWorker & { type: 'init' }): Promise<AvatarEngine> {
  const created = await createEngine(msg.engine, msg.options, log);
  if (!msg.wrapper) return created;
  try {
    const mod = (await import(msg.wrapper.module)) as { wrapEngine: WrapEngine };
    return mod.wrapEngine(created, msg.wrapper.options);
  } catch (err) {
    created.close();
    throw err;
  }
}

/** Renders the newest waiting frame, if any. Returns whether one was rendered. */
function renderOne(): boolean {
  if (!engine || !input || !output || closed) return false;
  const f = input.take();
  if (!f) return false;
  const m = f.meta;
  const isExpression = m[Meta.kind] === SlotKind.expression;
  driving.width = m[Meta.width]!;
  driving.height = m[Meta.height]!;
  driving.data = f.data;
  const slot = output.writable();
  const bytes = i420Bytes(outSize.width, outSize.height);
  out.width = outSize.width;
  out.height = outSize.height;
  out.data = slot.data.subarray(0, bytes);
  const t0 = performance.now();
  try {
    const stats = isExpression
      ? renderExpression(engine, f.data, out, m[Meta.capturedAt]!)
      : engine.render(driving, out, m[Meta.receivedAt]!);
    const o = slot.meta;
    o[Meta.seq] = m[Meta.seq]!;
    o[Meta.width] = out.width;
    o[Meta.height] = out.height;
    o[Meta.bytes] = bytes;
    o[Meta.receivedAt] = m[Meta.receivedAt]!;
    o[Meta.startedAt] = t0 + clockOffset;
    o[Meta.renderMs] = performance.now() - t0;
    o[Meta.trackMs] = stats.trackMs;
    o[Meta.latentMs] = stats.latentMs;
    o[Meta.generateMs] = stats.generateMs;
    o[Meta.pasteMs] = stats.pasteMs;
    o[Meta.face] = stats.face ? 1 : 0;
    o[Meta.outDropped] = outDropped;
    o[Meta.refineMs] = stats.refineMs ?? -1;
    o[Meta.faceIssue] = stats.faceIssue ? FACE_ISSUES.indexOf(stats.faceIssue) + 1 : 0;
    if (output.publish()) outDropped++;
    post({ type: 'frame' });
  } catch (err) {
    post({ type: 'renderError', error: toPublicError(err) });
  }
  return true;
}

async function handle(msg: ToWorker): Promise<void> {
  switch (msg.type) {
    case 'init': {
      setLogLevel(msg.logLevel);
      try {
        clockOffset = performance.timeOrigin - msg.mainTimeOrigin;
        initMsg = msg;
        if (msg.shared) adoptSharedEngineData(msg.shared);
        engine = await newEngine(msg);
        const r = engine.refiner;
        const refiner: RefinerInfo = r
          ? { available: true, defaultSteps: Math.min(r.defaultSteps, MAX_REFINER_STEPS), maxSteps: MAX_REFINER_STEPS }
          : noRefiner;
        const shared = msg.shared ? undefined : await sharedEngineData(msg.engine, msg.options.tracker ?? 'mesh');
        post({
          type: 'reply',
          id: msg.id,
          ok: true,
          refiner,
          expressions: typeof engine.renderTrack === 'function',
          ...(shared ? { shared } : {}),
        });
      } catch (err) {
        fail(msg.id, err);
      }
      return;
    }
    case 'input':
      input = new FrameExchange(msg.capacity, msg.buffer);
      return;
    case 'prepare': {
      try {
        if (!engine) throw new Error('prepare before init');
        const prepared = await engine.prepare(
          { width: msg.width, height: msg.height, data: new Uint8Array(msg.data) },
          msg.cache,
        );
        // Output buffers: allocated once per portrait size, reused for every frame.
        const capacity = i420Bytes(prepared.width, prepared.height);
        output = new FrameExchange(capacity);
        outSize = { width: prepared.width, height: prepared.height };
        post({ type: 'reply', id: msg.id, ok: true, prepared, output: { buffer: output.buffer, capacity } });
      } catch (err) {
        fail(msg.id, err);
      }
      return;
    }
    case 'kick':
      kickQueued = false;
      // A frame that arrived while this one rendered is picked up by another pass, after a turn of the event loop
      // so that messages (close, prepare, settings) are never starved by a busy engine.
      if (renderOne() && input?.pending) setImmediate(() => enqueue({ type: 'kick' }));
      return;
    case 'settings':
      engine?.updateSettings(msg.settings);
      return;
    case 'recalibrate':
      engine?.recalibrate();
      return;
    case 'reset': {
      try {
        if (!engine || !initMsg) throw new Error('reset before init');
        if (engine.reset) engine.reset();
        else {
          const old = engine;
          engine = null;
          old.close();
          engine = await newEngine(initMsg);
        }
        input = null;
        output = null;
        outSize = { width: 0, height: 0 };
        outDropped = 0;
        // An idle worker allocates nothing, so V8 would keep the session's garbage (portrait copies, frame buffers:
        // external memory in malloc) as long as it waits: collect it now, while no room depends on this thread.
        fullGc();
        post({ type: 'reply', id: msg.id, ok: true });
      } catch (err) {
        fail(msg.id, err);
      }
      return;
    }
    case 'close': {
      closed = true;
      try {
        engine?.close();
      } finally {
        engine = null;
        post({ type: 'reply', id: msg.id, ok: true });
        port!.close();
      }
      return;
    }
  }
}

let chain: Promise<void> = Promise.resolve();
/**
 * Whether a kick waits in the chain. One is enough: it renders the newest frame when its turn comes (the input is a
 * latest-frame-wins exchange), so further kicks are dropped here. Were they queued, a render slower than the frame
 * interval would pile them up without bound, and a settings or recalibrate message would wait behind every one.
 */
let kickQueued = false;
function enqueue(msg: ToWorker): void {
  if (msg.type === 'kick') {
    if (kickQueued) return;
    kickQueued = true;
  }
  chain = chain
    .then(() => handle(msg))
    .catch((err: unknown) => {
      // Unexpected: crash the worker so that the session's supervisor restarts it.
      setImmediate(() => {
        throw err;
      });
    });
}
port.on('message', enqueue);
