/**
 * The default engine's face analysis: the project's tracker (dlib 68-point landmarks, cascade detection, pose,
 * eyes, gaze) behind the small FaceVision interface the engine depends on.
 */
import { FaceTracker } from '../../../vision/tracker.js';
import type { FaceVision } from './engine.js';

/** Face analysis for stills (one shared analyzer) and a new FaceTracker per stream. */
export async function createDefaultVision(): Promise<FaceVision> {
  const analyzer = await FaceTracker.create();
  return {
    analyzeImage: (gray) => analyzer.analyzeImage(gray),
    createTracker: () => FaceTracker.create({ predictor: analyzer.predictor, detector: analyzer.detector }),
  };
}
