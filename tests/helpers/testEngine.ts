/**
 * Test hooks for the avatar worker, kept out of the production worker: an engine wrapper (EngineWrapper) that the
 * worker thread loads from this file and puts around the real engine. It can crash the thread after N frames (the
 * session's restart), keep it busy on every frame (a slow engine), or act as a refiner that costs a fixed time per step
 * (the steps policy with any engine).
 */
import type {
  AvatarEngine,
  EngineWrapper,
  PortraitCache,
  PreparedPortrait,
  RenderStats,
  TrackedFrame,
} from '../../server/avatar/engineTypes.js';
import type { I420Frame, RgbImage } from '../../server/types/image.js';
import type { AvatarSettings } from '../../server/types/protocol.js';

export interface TestEngineHooks {
  /** The worker crashes (an uncaught exception, as a crashing engine would raise) after rendering this many frames. */
  crashAfterFrames?: number;
  /** Every frame keeps the thread busy at least this long, as a slow engine would. */
  slowRenderMs?: number;
  /** The engine has a refiner (2 steps by default) whose every step keeps the thread busy this long. */
  fakeRefinerMsPerStep?: number;
}

/** The AvatarSession / EngineSpec wrapper that gives the session's engine these hooks. */
export function testEngine(hooks: TestEngineHooks): EngineWrapper {
  return { module: import.meta.url, options: { ...hooks } };
}

/** Busy (not sleeping) until `ms` after `from`: the thread is held, as by real work. */
function busyUntil(from: number, ms: number): void {
  while (performance.now() - from < ms);
}

class HookedEngine implements AvatarEngine {
  readonly #inner: AvatarEngine;
  readonly #hooks: TestEngineHooks;
  #rendered = 0;
  #steps = 0;

  constructor(inner: AvatarEngine, hooks: TestEngineHooks) {
    this.#inner = inner;
    this.#hooks = hooks;
    if (inner.reset) {
      this.reset = () => {
        inner.reset?.();
        this.#rendered = 0;
        this.#steps = 0;
      };
    }
    // Private mode's path gets the same hooks (slow frames, crashes, a refiner's cost) as render().
    const renderTrack = inner.renderTrack?.bind(inner);
    if (renderTrack) this.renderTrack = (input, out, ts) => this.#hooked(() => renderTrack(input, out, ts));
  }

  reset?: () => void;
  renderTrack?: (input: TrackedFrame, out: I420Frame, timestampMs: number) => RenderStats;

  get name(): string {
    return this.#inner.name;
  }

  get refiner(): { defaultSteps: number } | null | undefined {
    return (this.#hooks.fakeRefinerMsPerStep ?? 0) > 0 ? { defaultSteps: 2 } : this.#inner.refiner;
  }

  prepare(portrait: RgbImage, cache?: PortraitCache): Promise<PreparedPortrait> {
    return this.#inner.prepare(portrait, cache);
  }

  render(driving: I420Frame, out: I420Frame, timestampMs: number): RenderStats {
    return this.#hooked(() => this.#inner.render(driving, out, timestampMs));
  }

  #hooked(render: () => RenderStats): RenderStats {
    const t0 = performance.now();
    try {
      const stats = render();
      busyUntil(t0, this.#hooks.slowRenderMs ?? 0);
      const perStep = this.#hooks.fakeRefinerMsPerStep ?? 0;
      if (perStep <= 0 || this.#steps <= 0) return stats;
      const r0 = performance.now();
      busyUntil(r0, perStep * this.#steps);
      return { ...stats, refineMs: performance.now() - r0 };
    } finally {
      const crashAfter = this.#hooks.crashAfterFrames ?? 0;
      if (crashAfter > 0 && ++this.#rendered >= crashAfter) {
        setImmediate(() => {
          throw new Error('test engine: crash requested by crashAfterFrames');
        });
      }
    }
  }

  updateSettings(settings: AvatarSettings): void {
    this.#steps = settings.steps;
    this.#inner.updateSettings(settings);
  }

  recalibrate(): void {
    this.#inner.recalibrate();
  }

  close(): void {
    this.#inner.close();
  }
}

/** The EngineWrapper module's export (WrapEngine), called in the worker thread. */
export function wrapEngine(engine: AvatarEngine, options: Record<string, unknown>): AvatarEngine {
  return new HookedEngine(engine, options);
}
