/**
 * The browser face tracker's Web Worker (bundled as client/dist/face-tracker-worker.js): onnxruntime-web runs
 * BlazeFace, FaceMesh and Iris, and the server's own tracking logic (server/vision/mesh/meshCore.ts, the same
 * module) does everything around them, so a frame tracked here gives the server's numbers.
 *
 * Start-up ('init'): loads onnxruntime-web from `ortBaseUrl` (WASM: SIMD always, threads when the page is
 * cross-origin isolated; WebGPU when asked and available), fetches each model, checks its sha256 against the pins of
 * models/face/sources.json (built in) and creates its session; answers 'ready', or 'error' with FACE_MODEL_INVALID
 * (a missing, corrupted or unloadable model) or UNSUPPORTED (no usable runtime). Frames ('track') are handled one at
 * a time in arrival order (the page keeps at most one waiting); each answers 'result' or 'error' with its id.
 */
import type * as Ort from 'onnxruntime-web';
import sources from '../../../models/face/sources.json';
import {
  MeshTrackerCore,
  runMeshAsync,
  type MeshNetInfo,
  type MeshNetName,
  type MeshRun,
} from '../../../server/vision/mesh/meshCore.js';
import { MESH_MODEL_NAMES, parseFacePins, type MeshModelName } from '../../../server/vision/mesh/pins.js';
import type { ColorFrame } from '../../../server/vision/types.js';
import { ClientError, toClientError } from '../errors.js';
import type { FromTrackerWorker, ToTrackerWorker, TrackerFrame, TrackerRuntimeInfo } from './trackerTypes.js';

type OrtModule = typeof Ort;

/** The worker's global scope, as far as this file uses it (tsconfig has the DOM lib, not WebWorker). */
const scope = self as unknown as {
  onmessage: ((e: MessageEvent<ToTrackerWorker>) => void) | null;
  postMessage(msg: FromTrackerWorker): void;
  crossOriginIsolated: boolean;
  location: Location;
};

/** The network each model file is. */
const NET_OF: Record<MeshModelName, MeshNetName> = { blazeface: 'detector', facemesh: 'mesh', iris: 'iris' };

interface Loaded {
  ort: OrtModule;
  core: MeshTrackerCore;
  sessions: Record<MeshNetName, Ort.InferenceSession>;
  /** One input tensor per network around the core's own buffer (refilled before each run). */
  feeds: Partial<Record<MeshNetName, Record<string, Ort.Tensor>>>;
}

let loaded: Promise<Loaded> | null = null;
let state: Loaded | null = null;
/** Reused RGB buffer of the last frame size. */
let rgb = new Uint8Array(0);
let canvas: OffscreenCanvas | null = null;
let ctx: OffscreenCanvasRenderingContext2D | null = null;
/** Frames are tracked one after the other: the core's state is per stream. */
let queue: Promise<void> = Promise.resolve();

function hex(buf: ArrayBuffer): string {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('');
}

async function fetchChecked(base: string, name: MeshModelName, pins: Record<string, string>): Promise<Uint8Array> {
  const url = new URL(`${name}.onnx`, base).href;
  const expected = pins[name];
  if (!expected) throw new ClientError('FACE_MODEL_INVALID', `the face model pins name no ${name}.onnx`);
  let res: Response;
  try {
    res = await fetch(url);
  } catch (err) {
    throw new ClientError('FACE_MODEL_INVALID', `face model ${url} could not be fetched`, { cause: err });
  }
  if (!res.ok)
    throw new ClientError(
      'FACE_MODEL_INVALID',
      `face model missing: ${url} answered ${res.status} (on the server, run bash scripts/setup.sh: it converts the face models)`,
    );
  const data = new Uint8Array(await res.arrayBuffer());
  if (!crypto.subtle) throw new ClientError('UNSUPPORTED', 'the face models can only be checked on a secure page');
  const sha = hex(await crypto.subtle.digest('SHA-256', data));
  if (sha !== expected)
    throw new ClientError(
      'FACE_MODEL_INVALID',
      `face model ${url} does not match its pinned sha256 (on the server, delete it and run bash scripts/setup.sh)`,
    );
  return data;
}

function netInfo(file: string, s: Ort.InferenceSession): MeshNetInfo {
  const meta = (m: Ort.InferenceSession.ValueMetadata): { name: string; shape: readonly (number | string)[] } => ({
    name: m.name,
    shape: m.isTensor ? m.shape : [],
  });
  const input = s.inputMetadata[0];
  if (!input) throw new ClientError('FACE_MODEL_INVALID', `${file}: the model has no input`);
  return { file, inputName: input.name, inputShape: meta(input).shape, outputs: s.outputMetadata.map(meta) };
}

async function init(msg: Extract<ToTrackerWorker, { type: 'init' }>): Promise<Loaded> {
  const t0 = performance.now();
  const pins = msg.pins ?? parseFacePins(sources);
  // Fetched and checked before the runtime is loaded: a bad model is refused without downloading the runtime.
  const files = await Promise.all(MESH_MODEL_NAMES.map((n) => fetchChecked(msg.modelBaseUrl, n, pins)));
  let backend: 'wasm' | 'webgpu' = 'wasm';
  if (msg.backend !== 'wasm') {
    const gpu = (navigator as Navigator & { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
    const adapter = gpu ? await gpu.requestAdapter().catch(() => null) : null;
    if (adapter) backend = 'webgpu';
    else if (msg.backend === 'webgpu') throw new ClientError('UNSUPPORTED', 'this browser has no WebGPU adapter');
  }
  let ort: OrtModule;
  const runtime = new URL(backend === 'webgpu' ? 'ort.webgpu.min.mjs' : 'ort.wasm.min.mjs', msg.ortBaseUrl).href;
  try {
    ort = (await import(runtime)) as OrtModule;
  } catch (err) {
    throw new ClientError('UNSUPPORTED', `onnxruntime-web could not be loaded from ${runtime}`, { cause: err });
  }
  const isolated = scope.crossOriginIsolated === true;
  const threads = isolated ? (msg.threads > 0 ? msg.threads : Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
  ort.env.wasm.wasmPaths = msg.ortBaseUrl;
  ort.env.wasm.numThreads = threads;
  ort.env.logLevel = 'error';
  const sessions = {} as Record<MeshNetName, Ort.InferenceSession>;
  const infos = {} as Record<MeshNetName, MeshNetInfo>;
  try {
    for (let i = 0; i < MESH_MODEL_NAMES.length; i++) {
      const name = MESH_MODEL_NAMES[i]!;
      const s = await ort.InferenceSession.create(files[i]!, {
        executionProviders: backend === 'webgpu' ? ['webgpu', 'wasm'] : ['wasm'],
        graphOptimizationLevel: 'all',
      });
      sessions[NET_OF[name]] = s;
      infos[NET_OF[name]] = netInfo(`${name}.onnx`, s);
    }
  } catch (err) {
    for (const s of Object.values(sessions)) void s.release();
    if (err instanceof ClientError) throw err;
    throw new ClientError('FACE_MODEL_INVALID', `the face models could not be loaded: ${String(err)}`, { cause: err });
  }
  let core: MeshTrackerCore;
  try {
    core = new MeshTrackerCore(infos, msg.filters);
  } catch (err) {
    for (const s of Object.values(sessions)) void s.release();
    throw new ClientError('FACE_MODEL_INVALID', (err as Error).message, { cause: err });
  }
  const info: TrackerRuntimeInfo = {
    backend,
    threads,
    crossOriginIsolated: isolated,
    loadMs: performance.now() - t0,
  };
  scope.postMessage({ type: 'ready', ...info });
  return { ort, core, sessions, feeds: {} };
}

async function runNet(s: Loaded, r: MeshRun): Promise<readonly Float32Array[]> {
  const feeds = (s.feeds[r.net] ??= { [r.inputName]: new s.ort.Tensor('float32', r.input, [...r.dims]) });
  const res = await s.sessions[r.net].run(feeds, r.fetch);
  return r.fetch.map((n) => res[n]!.data as Float32Array);
}

/** The frame's pixels as an RGB ColorFrame (reusing one buffer); closes a VideoFrame or ImageBitmap. */
function readFrame(frame: TrackerFrame): ColorFrame {
  let width: number;
  let height: number;
  let rgba: Uint8ClampedArray | Uint8Array;
  if ('data' in frame) {
    ({ width, height } = frame);
    rgba = frame.data;
  } else {
    const isVideo = typeof VideoFrame !== 'undefined' && frame instanceof VideoFrame;
    width = isVideo ? frame.displayWidth : (frame as ImageBitmap).width;
    height = isVideo ? frame.displayHeight : (frame as ImageBitmap).height;
    try {
      if (!canvas || canvas.width !== width || canvas.height !== height) {
        canvas = new OffscreenCanvas(width, height);
        ctx = canvas.getContext('2d', { willReadFrequently: true });
      }
      if (!ctx) throw new ClientError('UNSUPPORTED', 'no 2D canvas in this worker');
      ctx.drawImage(frame, 0, 0, width, height);
      rgba = ctx.getImageData(0, 0, width, height).data;
    } finally {
      frame.close();
    }
  }
  if (!(Number.isInteger(width) && Number.isInteger(height) && width > 0 && height > 0))
    throw new ClientError('MEDIA', `bad frame size ${width} x ${height}`);
  if (rgba.length !== width * height * 4)
    throw new ClientError('MEDIA', `an RGBA frame of ${width} x ${height} needs ${width * height * 4} bytes`);
  if (rgb.length !== width * height * 3) rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; j < rgb.length; i += 4, j += 3) {
    rgb[j] = rgba[i]!;
    rgb[j + 1] = rgba[i + 1]!;
    rgb[j + 2] = rgba[i + 2]!;
  }
  return { format: 'rgb', width, height, data: rgb };
}

async function track(id: number, frame: TrackerFrame, timestampMs: number): Promise<void> {
  if (!loaded) throw new ClientError('INVALID_STATE', 'the tracker is not initialised');
  const s = (state ??= await loaded);
  const t0 = performance.now();
  const color = readFrame(frame);
  const frameMs = performance.now() - t0;
  const out = await runMeshAsync(s.core.track(color, timestampMs), (r) => runNet(s, r));
  scope.postMessage({ type: 'result', id, track: out, timings: { ...s.core.timings, frameMs } });
}

function fail(id: number | null, err: unknown): void {
  const e = toClientError(err);
  scope.postMessage({ type: 'error', id, code: e.code, message: e.message });
}

scope.onmessage = (e: MessageEvent<ToTrackerWorker>): void => {
  const msg = e.data;
  if (msg.type === 'init') {
    if (loaded) return fail(null, new ClientError('INVALID_STATE', 'the tracker is already initialised'));
    loaded = init(msg);
    loaded.catch((err: unknown) => fail(null, err));
  } else if (msg.type === 'track') {
    queue = queue.then(() =>
      track(msg.id, msg.frame, msg.timestampMs).catch((err: unknown) => {
        if ('close' in msg.frame) msg.frame.close(); // (a no-op when readFrame closed it)
        fail(msg.id, err);
      }),
    );
  } else if (msg.type === 'reset') {
    queue = queue.then(() => state?.core.reset());
  }
};
