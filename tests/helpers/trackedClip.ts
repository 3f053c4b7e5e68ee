/**
 * Private mode's input, made the way the performer's browser makes it: a driving clip of the test media decoded with
 * ffmpeg and tracked frame by frame with the server's own MeshTracker (FaceMesh + Iris) in the test process.
 */
import { MeshTracker } from '../../server/vision/mesh/meshTracker.js';
import type { FaceTrack } from '../../server/vision/types.js';
import { createGray, rgbToI420 } from '../../server/util/image.js';
import type { I420Frame } from '../../server/types/image.js';
import { readVideoFrames } from '../../server/util/video.js';
import { drivingClip } from '../../scripts/testData.js';

export interface TrackedClip {
  width: number;
  height: number;
  /** One per frame: a copy of the tracker's track (it reuses its own), or null for a frame without a face. */
  tracks: (FaceTrack | null)[];
  /** The decoded frames (I420), for the video path of the same clip. */
  frames: I420Frame[];
  /** Each frame's timestamp given to the tracker, ms (30 fps). */
  times: number[];
}

function copyTrack(t: FaceTrack): FaceTrack {
  return {
    box: { ...t.box },
    landmarks: t.landmarks.slice(),
    rawLandmarks: t.rawLandmarks.slice(),
    pose: { ...t.pose },
    eyes: { ...t.eyes },
    mouth: t.mouth,
    gaze: { ...t.gaze },
    confidence: t.confidence,
  };
}

/**
 * Tracks the first `maxFrames` frames of the clip `name` at `width` px wide (30 fps timestamps), as the default engine's
 * stream tracker does (a MeshTracker without the cascade fallback, reading the I420 frame).
 */
export async function trackClip(name: string, maxFrames: number, width = 640): Promise<TrackedClip> {
  const tracker = await MeshTracker.create({ fallbackDetector: null });
  const out: TrackedClip = { width: 0, height: 0, tracks: [], frames: [], times: [] };
  try {
    for await (const f of readVideoFrames(drivingClip(name), { format: 'rgb24', width, maxFrames })) {
      out.width = f.width;
      out.height = f.height;
      const i420 = rgbToI420({ width: f.width, height: f.height, data: f.data });
      const ts = f.index * (1000 / 30);
      const t = tracker.track(createGray(f.width, f.height), ts, { format: 'i420', ...i420 });
      out.tracks.push(t ? copyTrack(t) : null);
      out.frames.push(i420);
      out.times.push(ts);
    }
  } finally {
    tracker.close();
  }
  return out;
}
