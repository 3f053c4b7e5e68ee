/**
 * The default engine's face analysis behind the small FaceVision interface the engine depends on: the FaceMesh +
 * Iris tracker (the default: MediaPipe's networks as ONNX, lids and irises) or the dlib 68-point tracker (cascade
 * detection, pupil blobs; its model's training data is licensed for non-commercial use only).
 */
import { MeshTracker } from '../../../vision/mesh/meshTracker.js';
import { FaceTracker } from '../../../vision/tracker.js';
import { PersonSegmenter, type PersonMask } from '../../../vision/segment.js';
import type { RgbImage } from '../../../types/image.js';
import { fitRgb } from '../size.js';
import type { FaceVision } from './engine.js';

/** Which tracker drives the engine. */
export type TrackerKind = 'mesh' | 'dlib';

/** Face analysis for stills (one shared analyzer) and a new tracker per stream. */
export async function createDefaultVision(kind: TrackerKind = 'mesh'): Promise<FaceVision> {
  // The portrait's head as a layer (either tracker): selfie segmentation, once per portrait.
  const segmenter = await PersonSegmenter.load();
  const segmentPerson = (image: RgbImage): PersonMask =>
    segmenter.segment(fitRgb(image, segmenter.size, segmenter.size));
  if (kind === 'mesh') {
    const analyzer = await MeshTracker.create();
    return {
      kind,
      readsGray: false,
      segmentPerson,
      analyzeImage: (gray, color) => analyzer.analyzeImage(gray, color),
      createTracker: () => MeshTracker.create({ models: analyzer.models, fallbackDetector: null }),
    };
  }
  const analyzer = await FaceTracker.create();
  return {
    kind,
    readsGray: true,
    segmentPerson,
    analyzeImage: (gray) => analyzer.analyzeImage(gray),
    createTracker: () => FaceTracker.create({ predictor: analyzer.predictor, detector: analyzer.detector }),
  };
}
