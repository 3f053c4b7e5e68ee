/**
 * Read-only model data that an engine's worker threads share instead of each loading its own. The first worker of a
 * pool loads it as usual and returns it with its `init` reply; it lives on shared memory, so the messages share it
 * (nothing is copied) and the pool hands it to every later worker, which adopts it before its engine is created. The
 * main thread never parses anything. For the default engine: the 68-point shape predictor, which every worker
 * otherwise read (a 100 MB file, transient) and parsed again (66 MB kept, ~0.3 s of CPU) for itself.
 *
 * Runs in the worker threads (the main thread only passes the data along).
 */
import { ShapePredictor, type ShapePredictorData } from '../../vision/shapePredictor.js';

export interface SharedEngineData {
  /** The default shape predictor's parse (ShapePredictor.shared()). */
  shapePredictor?: ShapePredictorData;
}

/**
 * In a worker whose engine `name` was created: the data it loaded that other workers can share ({} if none). The
 * shape predictor only where the dlib tracker runs (the default FaceMesh tracker's ONNX sessions are shared by
 * onnxruntime itself per process).
 */
export async function sharedEngineData(name: string, tracker: 'mesh' | 'dlib' = 'mesh'): Promise<SharedEngineData> {
  if (name !== 'default' || tracker !== 'dlib') return {};
  return { shapePredictor: await ShapePredictor.shared() };
}

/** In a worker: makes the shared data this thread's (before the engine is created). */
export function adoptSharedEngineData(data: SharedEngineData): void {
  if (data.shapePredictor) ShapePredictor.adopt(data.shapePredictor);
}
