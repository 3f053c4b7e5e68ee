/**
 * Worker-thread entry of FaceChecker: loads the face analyzer once and answers "how many faces?" for uploaded
 * portraits, so that model loading and a thorough still-image detection never block the signaling loop. It is the
 * default engine's own analyzer (BlazeFace + FaceMesh, with the OpenCV cascades for faces BlazeFace misses), so an
 * accepted upload is one the engine can prepare, and no non-commercial model is in the path.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { setLogLevel, type LogLevel } from '../logger.js';
import { MeshTracker } from '../vision/mesh/meshTracker.js';
import { rgbToGray } from '../util/image.js';
import { analysisImage } from '../avatar/engines/size.js';

export interface FaceCheckRequest {
  id: number;
  width: number;
  height: number;
  data: Uint8Array;
}
export type FaceCheckReply = { id: number; faces: number } | { id: number; error: string };

setLogLevel((workerData as { logLevel: LogLevel }).logLevel);
let tracker: Promise<MeshTracker> | null = null;
const port = parentPort;
if (!port) throw new Error('faceCheckWorker must run in a worker thread');

port.on('message', (req: FaceCheckRequest) => {
  (tracker ??= MeshTracker.create())
    .then((t) => {
      // The check is "is there a face?": the first face answers it, on the picture at the size the engine analyses
      // (a 40 Mpx upload would otherwise make the cascade fallback scan 40 Mpx).
      const rgb = analysisImage({ width: req.width, height: req.height, data: req.data });
      const faces = t.analyzeImage(rgbToGray(rgb), { format: 'rgb', ...rgb }, 1);
      port.postMessage({ id: req.id, faces: faces.length } satisfies FaceCheckReply);
    })
    .catch((err: unknown) => {
      tracker = null;
      port.postMessage({
        id: req.id,
        error: err instanceof Error ? err.message : String(err),
      } satisfies FaceCheckReply);
    });
});
