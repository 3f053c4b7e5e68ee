/**
 * The engine registry: a name -> factory map. Adding an engine is one line in `factories`.
 * Runs inside the avatar worker thread (server/avatar/worker.ts), never on the signaling loop.
 */
import type { AvatarEngine } from '../engine.js';
import type { Logger } from '../../logger.js';
import { AppError } from '../../errors.js';
import { PortraitEngine } from './portrait.js';
import { DiagnosticPassthroughEngine } from './passthrough.js';
import { createDefaultEngine } from './default/index.js';

/** What every engine is constructed with (from config.avatar). */
export interface EngineOptions {
  /** Model pack folder (engines that use one). */
  modelPack: string;
  executionProvider: 'cpu' | 'cuda';
  intraOpThreads: number;
  /** Long side of the output video, even. */
  outputSize: number;
  /** Face tracker of the default engine (default 'mesh': FaceMesh + Iris; 'dlib': the 68-point predictor). */
  tracker?: 'mesh' | 'dlib';
  /**
   * Refiner steps (0 = warp only, the default). Only the default engine with a refiner pack accepts more; the others
   * refuse k > 0 with AppError('UNSUPPORTED') rather than silently ignoring it.
   */
  steps?: number;
  /** The learned refiner pack for the default engine (null: none). */
  refinerPack?: string | null;
  /** Which refiner network samples the steps: the distilled student (default) or the teacher (evaluation). */
  refinerNet?: 'student' | 'teacher';
  /**
   * TEST ONLY: the worker crashes (an uncaught exception) after rendering this many frames, to exercise the
   * session's restart. Never set by the config.
   */
  crashAfterFrames?: number;
  /**
   * TEST ONLY: the worker spends this long (busy, like a slow engine) on every frame, to show that a slow engine
   * neither blocks the signaling loop nor other rooms. Never set by the config.
   */
  slowRenderMs?: number;
  /**
   * TEST ONLY: the worker acts as if its engine had a refiner that keeps the thread busy this long per step, so that
   * the session's steps policy can be exercised with any engine. Never set by the config.
   */
  fakeRefinerMsPerStep?: number;
}

export type EngineFactory = (options: EngineOptions, log: Logger) => AvatarEngine | Promise<AvatarEngine>;

const factories: Record<string, EngineFactory> = {
  default: createDefaultEngine,
  portrait: (o) => new PortraitEngine({ outputSize: o.outputSize }),
  passthrough: (o) => new DiagnosticPassthroughEngine({ outputSize: o.outputSize }),
};

/** Engines that can run a refiner and accept steps > 0 (the default engine checks that its refiner pack exists). */
const refinerEngines = new Set<string>(['default']);

/** Names that createEngine() accepts. */
export function engineNames(): string[] {
  return [...new Set([...Object.keys(factories), 'default'])];
}

/**
 * Creates an engine by name. 'default' is the model-pack engine once it is registered; until then it runs the
 * portrait engine and says so in the log.
 * @throws AppError('CONFIG_INVALID') for an unknown name.
 */
export async function createEngine(name: string, options: EngineOptions, log: Logger): Promise<AvatarEngine> {
  let factory = factories[name];
  if (!factory && name === 'default') {
    log.info('no model-pack engine is registered yet: engine "default" runs the portrait engine (no animation)');
    factory = factories.portrait;
  }
  if (!factory)
    throw new AppError('CONFIG_INVALID', `unknown avatar engine "${name}" (known: ${engineNames().join(', ')})`);
  const steps = options.steps ?? 0;
  if (!Number.isInteger(steps) || steps < 0) throw new TypeError('steps must be a non-negative integer');
  if (steps > 0 && !refinerEngines.has(name)) {
    throw new AppError('UNSUPPORTED', `engine "${name}" has no refiner: steps must be 0 (got ${steps})`);
  }
  return factory(options, log);
}
