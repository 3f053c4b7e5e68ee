/**
 * Worker-thread entry of FaceChecker: loads the face tracker once and answers "how many faces?" for uploaded portraits,
 * so that a 100 MB model parse and a thorough still-image detection never block the signaling loop.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { setLogLevel, type LogLevel } from '../logger.js';
import { FaceTracker } from '../vision/tracker.js';
import { rgbToGray } from '../util/image.js';

export interface FaceCheckRequest {
  id: number;
  width: number;
  height: number;
  data: Uint8Array;
}
export type FaceCheckReply = { id: number; faces: number } | { id: number; error: string };

setLogLevel((workerData as { logLevel: LogLevel }).logLevel);
let tracker: Promise<FaceTracker> | null = null;
const port = parentPort;
if (!port) throw new Error('faceCheckWorker must run in a worker thread');

port.on('message', (req: FaceCheckRequest) => {
  (tracker ??= FaceTracker.create())
    .then((t) => {
      const faces = t.analyzeImage(rgbToGray({ width: req.width, height: req.height, data: req.data }));
      port.postMessage({ id: req.id, faces: faces.length } satisfies FaceCheckReply);
    })
    .catch((err: unknown) => {
      tracker = null;
      port.postMessage({ id: req.id, error: err instanceof Error ? err.message : String(err) } satisfies FaceCheckReply);
    });
});
