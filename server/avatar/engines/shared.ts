/**
 * Read-only model data that an engine's worker threads share instead of each loading its own: made once per process
 * in the main thread, on shared memory (a postMessage shares it, nothing is copied), and adopted by each worker
 * before its engine is created. For the default engine: the 68-point shape predictor (66 MB parsed from a 100 MB
 * file, which every worker otherwise read and parsed again: ~170 MB and ~0.3 s per worker).
 *
 * Light on purpose: the main thread imports this, never the engines themselves.
 */
import { ShapePredictor, type ShapePredictorData } from '../../vision/shapePredictor.js';
import type { Logger } from '../../logger.js';

export interface SharedEngineData {
  /** The default shape predictor's parse (ShapePredictor.shared()). */
  shapePredictor?: ShapePredictorData;
}

/** The data the workers of engine `name` share; {} where there is none or it cannot be loaded (each worker loads its own, and reports the error). */
export async function sharedEngineData(name: string, log: Logger): Promise<SharedEngineData> {
  if (name !== 'default') return {};
  try {
    return { shapePredictor: await ShapePredictor.shared() };
  } catch (err) {
    log.warn('shape predictor not shared with the avatar workers (each loads its own)', { err: err as Error });
    return {};
  }
}

/** In a worker: makes the shared data this thread's (before the engine is created). */
export function adoptSharedEngineData(data: SharedEngineData): void {
  if (data.shapePredictor) ShapePredictor.adopt(data.shapePredictor);
}
