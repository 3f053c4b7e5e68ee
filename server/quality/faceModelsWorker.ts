/**
 * Worker-thread entry of FaceModelPool (faceModels.ts): one `@vladmandic/human` instance on TensorFlow.js's WASM
 * backend, answering "where is the face, its 478 FaceMesh points (with iris), its 68 points from face-api's landmark
 * net (run on the same tfjs and backend, on the box of the FaceMesh points), and its descriptor?" for one image at a
 * time. The models are read from local files only: Node's fetch has no file:// support, so this worker (and only
 * this worker: it owns its globals) answers file:// URLs from disk and refuses every other URL, so that nothing is
 * ever downloaded at run time; the 68 net's weights are read from disk directly.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parentPort, workerData } from 'node:worker_threads';
import type * as Tf from '@tensorflow/tfjs-core';
import { FaceLandmark68Net, type Tfjs } from './faceLandmark68Net.js';
import { landmarkBoxFromMesh } from './landmarks68.js';

export interface FaceModelWorkerData {
  /** Folder holding blazeface/facemesh/iris/faceres .json + .bin (already verified by the pool). */
  modelDir: string;
  /** Folder holding face_landmark_68_model-weights_manifest.json + .bin (already verified by the pool). */
  landmarkModelDir: string;
}

export interface FaceModelRequest {
  id: number;
  width: number;
  height: number;
  /** Packed RGB, transferred. */
  data: Uint8Array;
  /** Also compute the 1024-d descriptor (HSE FaceRes): the slow part, ~3x the rest. */
  descriptor: boolean;
}

export interface FaceModelFace {
  /** 478 points × (x, y, z) in input pixels (z: relative depth at the same scale), FaceMesh order + 10 iris points. */
  mesh: Float32Array;
  /** Face box [x, y, w, h] in input pixels. */
  box: [number, number, number, number];
  /**
   * 68 points × (x, y) in input pixels (iBUG order) from face-api's landmark net, run on `box68`; null when that box
   * lies outside the image.
   */
  landmarks68: Float32Array | null;
  /** The box the 68 net was given, [x, y, w, h] in input pixels, from the FaceMesh points (landmarks68.ts). */
  box68: [number, number, number, number];
  /** Detector × mesh confidence, 0..1. */
  score: number;
  /** 1024 numbers when asked for and computed, else null. */
  descriptor: Float32Array | null;
}

export type FaceModelReply =
  /** ms: the whole analysis; ms68: of that, the 68-point net. */
  | { id: number; face: FaceModelFace | null; ms: number; ms68: number }
  | { id: number; error: string }
  | { ready: true; loadMs: number }
  | { fatal: string };

/** The subset of Human's API this worker uses (its bundled types pull in DOM-only names). */
interface HumanFace {
  mesh: number[][];
  box: [number, number, number, number];
  score: number;
  embedding?: number[];
}
interface HumanLike {
  load(): Promise<void>;
  detect(input: Tf.Tensor3D, config: Record<string, unknown>): Promise<{ face: HumanFace[]; error?: string | null }>;
  /** The tfjs-core namespace Human runs on (the package's Node WASM build requires @tensorflow/tfjs-core). */
  tf: Tfjs;
}

const port = parentPort;
if (!port) throw new Error('faceModelsWorker must run in a worker thread');
const { modelDir, landmarkModelDir } = workerData as FaceModelWorkerData;

globalThis.fetch = async (input: string | URL | Request): Promise<Response> => {
  const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
  if (url.startsWith('file://')) {
    const file = fileURLToPath(url);
    return new Response(await readFile(file), { status: 200 });
  }
  throw new Error(`face models load from local files only; refused to fetch ${url}`);
};

function loadHuman(): HumanLike {
  const require = createRequire(import.meta.url);
  // The package's exports map has no subpath for the Node WASM build: load the file by its resolved path.
  const humanDist = path.dirname(require.resolve('@vladmandic/human'));
  const wasmDist = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm'));
  const mod = require(path.join(humanDist, 'human.node-wasm.js')) as {
    Human: new (config: Record<string, unknown>) => HumanLike;
  };
  const off = { enabled: false };
  return new mod.Human({
    backend: 'wasm',
    wasmPath: wasmDist + path.sep,
    modelBasePath: pathToFileURL(modelDir + path.sep).href,
    debug: false,
    warmup: 'none',
    // Every frame is analysed from scratch: no result caching between similar inputs, no skipped frames.
    cacheSensitivity: 0,
    filter: off,
    face: {
      enabled: true,
      detector: {
        modelPath: 'blazeface.json',
        rotation: false,
        maxDetected: 1,
        return: false,
        skipFrames: 0,
        skipTime: 0,
        minConfidence: 0.2,
      },
      mesh: { enabled: true, modelPath: 'facemesh.json' },
      iris: { enabled: true, modelPath: 'iris.json' },
      description: { enabled: true, modelPath: 'faceres.json', skipFrames: 0, skipTime: 0 },
      emotion: off,
      antispoof: off,
      liveness: off,
      attention: off,
      gear: off,
    },
    body: off,
    hand: off,
    object: off,
    gesture: off,
    segmentation: off,
  });
}

/** The 68-point net, on Human's tfjs (the same module instance, so the same initialised WASM backend). */
async function loadLandmarkNet(tf: Tfjs): Promise<FaceLandmark68Net> {
  const manifest = JSON.parse(
    await readFile(path.join(landmarkModelDir, 'face_landmark_68_model-weights_manifest.json'), 'utf8'),
  ) as unknown;
  const bin = await readFile(path.join(landmarkModelDir, 'face_landmark_68_model.bin'));
  return FaceLandmark68Net.fromWeights(tf, manifest, bin);
}

let human: HumanLike;
let net68: FaceLandmark68Net;
try {
  const t0 = performance.now();
  human = loadHuman();
  await human.load();
  net68 = await loadLandmarkNet(human.tf);
  port.postMessage({ ready: true, loadMs: Math.round(performance.now() - t0) } satisfies FaceModelReply);
} catch (err) {
  port.postMessage({ fatal: err instanceof Error ? err.message : String(err) } satisfies FaceModelReply);
  throw err;
}

/** Requests run one at a time, in order (the WASM backend is single-threaded). */
let chain: Promise<void> = Promise.resolve();
port.on('message', (req: FaceModelRequest) => {
  chain = chain.then(() => analyze(req));
});

async function analyze(req: FaceModelRequest): Promise<void> {
  const t0 = performance.now();
  let input: Tf.Tensor3D | null = null;
  let ms68 = 0;
  try {
    input = human.tf.tensor3d(req.data, [req.height, req.width, 3], 'int32');
    const res = await human.detect(input, { face: { description: { enabled: req.descriptor } } });
    if (res.error) throw new Error(res.error);
    const f = res.face[0];
    let face: FaceModelFace | null = null;
    if (f && f.mesh.length >= 478) {
      const mesh = new Float32Array(478 * 3);
      for (let i = 0; i < 478; i++) {
        const p = f.mesh[i]!;
        mesh[i * 3] = p[0]!;
        mesh[i * 3 + 1] = p[1]!;
        mesh[i * 3 + 2] = p[2] ?? 0;
      }
      const emb = req.descriptor && f.embedding && f.embedding.length > 0 ? Float32Array.from(f.embedding) : null;
      const t68 = performance.now();
      const box68 = landmarkBoxFromMesh(mesh);
      const landmarks68 = net68.detect({ width: req.width, height: req.height, data: req.data }, box68);
      ms68 = performance.now() - t68;
      face = { mesh, box: f.box, score: f.score, landmarks68, box68, descriptor: emb };
    }
    const reply: FaceModelReply = { id: req.id, face, ms: performance.now() - t0, ms68 };
    const transfer: ArrayBuffer[] = [];
    if (face) {
      transfer.push(face.mesh.buffer as ArrayBuffer);
      if (face.landmarks68) transfer.push(face.landmarks68.buffer as ArrayBuffer);
      if (face.descriptor) transfer.push(face.descriptor.buffer as ArrayBuffer);
    }
    port!.postMessage(reply, transfer);
  } catch (err) {
    port!.postMessage({ id: req.id, error: err instanceof Error ? err.message : String(err) } satisfies FaceModelReply);
  } finally {
    input?.dispose();
  }
}
