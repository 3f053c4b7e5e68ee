/**
 * Shared vision types. Coordinates are in pixels of the frame they came from.
 */

/** A dlib rectangle: inclusive integer corners (width r-l+1; the shape predictor scales by r-l). */
export interface Box {
  l: number;
  t: number;
  r: number;
  b: number;
}

/** Head pose from the 68 landmarks and a generic 3D face. Angles in degrees; translation in the camera
 * frame (units of the generic model, approx. mm), for a pinhole with focal length = frame width. */
export interface HeadPose {
  yaw: number;
  pitch: number;
  roll: number;
  tx: number;
  ty: number;
  tz: number;
}

/** One tracked face in one frame. */
export interface FaceTrack {
  box: Box;
  /** 68 points (iBUG order), x0,y0,x1,y1,... after temporal smoothing. */
  landmarks: Float32Array;
  /** The predictor's raw integer output for this frame, before smoothing. */
  rawLandmarks: Int32Array;
  pose: HeadPose;
  /** Eye openness: eye height / eye width (about 0.25-0.35 open, < 0.1 closed). */
  eyes: { left: number; right: number };
  /** Mouth openness: inner-lip gap / mouth width (0 closed, ~0.5+ wide open). */
  mouth: number;
  /** Gaze: pupil offset from the eye centre, normalised by the eye half-width (x) and half-height (y),
   * each in about -1..1; positive x = towards image right, positive y = down. */
  gaze: { x: number; y: number };
  /**
   * Half the difference between the two eyes' gaze (image-left eye minus image-right eye, the units of `gaze`): each
   * eye's own gaze is gaze +/- vergence (crossed eyes: x > 0). Only trackers that see each iris (FaceMesh + Iris) set
   * it; absent: both eyes look the same way.
   */
  vergence?: { x: number; y: number };
  /** 0..1: how sure the tracker is that this is a face. */
  confidence: number;
  /**
   * The whole mesh when the tracker has one (FaceMesh + Iris: 478 points, x0, y0, ...; vision/mesh/landmarks.ts gives
   * the layout), absent otherwise.
   */
  mesh?: Float32Array;
}

/**
 * A frame for the trackers that read colour (FaceMesh): packed RGB (3 bytes a pixel), I420 (Y plane, then U and V
 * at half resolution: even width and height), or gray (read as R = G = B). Structurally the engine's RgbImage /
 * I420Frame / GrayImage, tagged.
 */
export interface ColorFrame {
  format: 'rgb' | 'i420' | 'gray';
  width: number;
  height: number;
  data: Uint8Array;
}
