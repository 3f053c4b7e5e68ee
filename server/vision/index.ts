/**
 * Vision: face detection (OpenCV cascades), 68-point landmarks (dlib's model), head pose, expression features and
 * the per-frame tracker.
 */
export * from './types.js';
export {
  CascadeClassifier,
  CASCADE_PATHS,
  parseCascadeXml,
  groupRectangles,
  type CvRect,
  type DetectParams,
  type CascadeDetections,
} from './cascade.js';
export { FaceDetector, BOX_MAP, type DetectedFace, type DetectOptions, type FaceDetectorOptions } from './detector.js';
export { PoseSolver, emptyPose, projectAxes } from './pose.js';
export { OneEuroFilter, type OneEuroParams } from './oneEuro.js';
export { eyeOpenness, mouthOpenness } from './features.js';
export { PupilFinder, type PupilResult } from './gaze.js';
export { FaceTracker, ShapeGeometry, cloneTrack, type FaceTrackerOptions, type TrackTimings } from './tracker.js';
export { ShapePredictor } from './shapePredictor.js';
export * from './imageOps.js';
