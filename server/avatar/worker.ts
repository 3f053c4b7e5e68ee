/**
 * The avatar worker thread: owns one engine, off the signaling loop. Driven by AvatarSession (session.ts) through
 * the messages below. Frames travel through shared memory (FrameSlots): the main thread copies the newest driving
 * frame into an input slot and posts `render`; the worker renders into one of two output slots, allocated once per
 * prepared portrait size, and posts `frame` with the timings.
 */
import { parentPort } from 'node:worker_threads';
import type { AvatarEngine, I420Frame, PreparedPortrait, RenderStats } from './engine.js';
import type { AvatarSettings, PublicError } from '../signaling/protocol.js';
import { createEngine, type EngineOptions } from './engines/index.js';
import { FrameSlots, i420Bytes } from '../media/mailbox.js';
import { createLogger } from '../logger.js';
import { toPublicError } from '../errors.js';

/** Main thread -> worker. */
export type ToWorker =
  | { type: 'init'; id: number; engine: string; options: EngineOptions }
  | { type: 'input'; buffer: SharedArrayBuffer; slots: number; capacity: number }
  | { type: 'prepare'; id: number; width: number; height: number; data: ArrayBuffer }
  | { type: 'render'; slot: number; seq: number; timestampMs: number }
  | { type: 'settings'; settings: AvatarSettings }
  | { type: 'recalibrate' }
  | { type: 'close'; id: number };

/** Worker -> main thread. */
export type FromWorker =
  | {
      type: 'reply';
      id: number;
      ok: true;
      prepared?: PreparedPortrait;
      output?: { buffer: SharedArrayBuffer; capacity: number };
    }
  | { type: 'reply'; id: number; ok: false; error: PublicError }
  | { type: 'frame'; seq: number; outSlot: number; stats: RenderStats; renderMs: number }
  | { type: 'renderError'; seq: number; error: PublicError };

/** Output slots per session: the worker renders into one while the main thread publishes the other. */
export const OUTPUT_SLOTS = 2;

const port = parentPort;
if (!port) throw new Error('avatar worker: must run in a worker thread');
const log = createLogger('avatar.worker');

let engine: AvatarEngine | null = null;
let input: FrameSlots | null = null;
let output: FrameSlots | null = null;
let outFrames: I420Frame[] = [];
let nextOut = 0;
let rendered = 0;
let crashAfter = 0;
const driving: I420Frame = { width: 0, height: 0, data: new Uint8Array(0) };

function post(msg: FromWorker): void {
  port!.postMessage(msg);
}

function fail(id: number, err: unknown): void {
  post({ type: 'reply', id, ok: false, error: toPublicError(err) });
}

async function handle(msg: ToWorker): Promise<void> {
  switch (msg.type) {
    case 'init': {
      try {
        crashAfter = msg.options.crashAfterFrames ?? 0;
        engine = await createEngine(msg.engine, msg.options, log);
        post({ type: 'reply', id: msg.id, ok: true });
      } catch (err) {
        fail(msg.id, err);
      }
      return;
    }
    case 'input':
      input = new FrameSlots(msg.slots, msg.capacity, msg.buffer);
      return;
    case 'prepare': {
      try {
        if (!engine) throw new Error('prepare before init');
        const prepared = await engine.prepare({ width: msg.width, height: msg.height, data: new Uint8Array(msg.data) });
        // Output buffers: allocated once per portrait size, reused for every frame.
        const capacity = i420Bytes(prepared.width, prepared.height);
        output = new FrameSlots(OUTPUT_SLOTS, capacity);
        outFrames = Array.from({ length: OUTPUT_SLOTS }, (_, i) => ({
          width: prepared.width,
          height: prepared.height,
          data: output!.view(i, capacity),
        }));
        nextOut = 0;
        post({ type: 'reply', id: msg.id, ok: true, prepared, output: { buffer: output.buffer, capacity } });
      } catch (err) {
        fail(msg.id, err);
      }
      return;
    }
    case 'render': {
      if (!engine || !input || !output) {
        post({ type: 'renderError', seq: msg.seq, error: { code: 'INVALID_STATE', message: 'render before prepare' } });
        return;
      }
      const f = input.read(msg.slot);
      driving.width = f.width;
      driving.height = f.height;
      driving.data = f.data;
      const outSlot = nextOut;
      const out = outFrames[outSlot]!;
      const t0 = performance.now();
      try {
        const stats = engine.render(driving, out, msg.timestampMs);
        const renderMs = performance.now() - t0;
        output.commit(outSlot, msg.seq, out.width, out.height, out.data.length);
        nextOut = (nextOut + 1) % OUTPUT_SLOTS;
        post({ type: 'frame', seq: msg.seq, outSlot, stats, renderMs });
      } catch (err) {
        post({ type: 'renderError', seq: msg.seq, error: toPublicError(err) });
      }
      if (crashAfter > 0 && ++rendered >= crashAfter) {
        // Test-only (EngineOptions.crashAfterFrames): an uncaught exception, as a crashing engine would raise.
        setImmediate(() => {
          throw new Error('avatar worker: crash requested by crashAfterFrames (test only)');
        });
      }
      return;
    }
    case 'settings':
      engine?.updateSettings(msg.settings);
      return;
    case 'recalibrate':
      engine?.recalibrate();
      return;
    case 'close': {
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

// Messages are handled one at a time, in order: a prepare() that awaits must not let a render overtake it.
let chain: Promise<void> = Promise.resolve();
port.on('message', (msg: ToWorker) => {
  chain = chain
    .then(() => handle(msg))
    .catch((err: unknown) => {
      // Unexpected: crash the worker so that the session's supervisor restarts it.
      setImmediate(() => {
        throw err;
      });
    });
});
