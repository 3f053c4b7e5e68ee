/**
 * Independent face models for the quality scores: pretrained models that the engine never uses, so that no score is
 * measured with the engine's own (dlib 68-point) landmarks alone.
 *
 * - BlazeFace (face box), MediaPipe FaceMesh with iris (478 points with depth), and the HSE FaceRes descriptor (1024
 *   numbers; identity), all from the npm package `@vladmandic/human` 3.3.6 (MIT), run on TensorFlow.js 4.22's WASM
 *   backend (SIMD, one thread per worker). Nothing is downloaded: the model files ship inside the package.
 * - A second, different landmark network: the 68-point net of `@vladmandic/face-api` 1.7.15 (MIT; face-api.js's
 *   FaceLandmark68Net, iBUG 68 points), run in the same workers on the same tfjs backend, on the face box that FaceMesh
 *   found (faceLandmark68Net.ts, landmarks68.ts): every analysed face gets both point sets, so the eye and mouth scores
 *   can be read from two networks (the live engine tracks with FaceMesh itself).
 * - Speed: the WASM backend is single-threaded, ~50-70 ms per image for box + mesh + iris, ~8 ms for the 68 net and
 *   ~130 ms more for the descriptor on this 2-core VM, so the pool runs one worker thread per core (each with its own
 *   models), and the evaluation asks for descriptors on a subset of frames only (see evaluate.ts).
 *
 * Every model file is checked against the sha256 below before it is loaded: a corrupted or swapped file is refused
 * with AppError('FACE_MODEL_INVALID') naming the file, never half loaded.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { RgbImage } from '../types/image.js';
import { AppError } from '../errors.js';
import { workerSpec } from '../util/worker.js';
import type { FaceModelFace, FaceModelReply, FaceModelRequest, FaceModelWorkerData } from './faceModelsWorker.js';

export type { FaceModelFace } from './faceModelsWorker.js';

/** The model files used, with their size and sha256 in `@vladmandic/human` 3.3.6. */
export const FACE_MODEL_FILES: readonly { file: string; bytes: number; sha256: string }[] = [
  { file: 'blazeface.json', bytes: 79038, sha256: 'cd7bbfc078270572beb39f9e5ae67aadbd50b5e67cff37e6d4f6b3ea39312e5f' },
  { file: 'blazeface.bin', bytes: 538928, sha256: 'dc9a97fdc50bc43216554bdd69aa3e7b9361a519ee7bdd996a2f69a98a6f9b72' },
  { file: 'facemesh.json', bytes: 95845, sha256: 'b60ca26f404724f43bd2b1575761d8265180e1f053cc0731caa68462927309e7' },
  { file: 'facemesh.bin', bytes: 1477958, sha256: '3826da640b0a3021161605369ee6af293f75d518040355b960ec71a3390c1c0b' },
  { file: 'iris.json', bytes: 122025, sha256: '49038ac9dcc09aa05474d91d98e9db5b47af4830929bcf102ed5a56bfbabb465' },
  { file: 'iris.bin', bytes: 2599092, sha256: 'd7f296d184274213d4642681ae186112cbbec77fd2ab066257d3c56a1940bc71' },
  { file: 'faceres.json', bytes: 71432, sha256: '5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df' },
  { file: 'faceres.bin', bytes: 6978814, sha256: '2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b' },
];

/** The 68-point landmark net's files, with their size and sha256 in `@vladmandic/face-api` 1.7.15. */
export const LANDMARK68_MODEL_FILES: readonly { file: string; bytes: number; sha256: string }[] = [
  {
    file: 'face_landmark_68_model-weights_manifest.json',
    bytes: 8485,
    sha256: 'ca4886639f86e99b39fed0c155f81b63317225773bd9616716e887b0153389c9',
  },
  {
    file: 'face_landmark_68_model.bin',
    bytes: 356840,
    sha256: '4611ef65c87d836d03d684b30eec4d195d8b219fa1dd58fc58945831c6b9299b',
  },
];

/** Names of the models for reports. */
export const FACE_MODELS_LABEL =
  '@vladmandic/human 3.3.6: BlazeFace + MediaPipe FaceMesh with iris (478 points) + HSE FaceRes descriptor (1024-d); @vladmandic/face-api 1.7.15: 68-point landmark net (iBUG 68) on the FaceMesh face box; tfjs 4.22 WASM';

/** The models folder inside the installed `@vladmandic/human` package. */
export function defaultFaceModelDir(): string {
  const require = createRequire(import.meta.url);
  return path.join(path.dirname(path.dirname(require.resolve('@vladmandic/human'))), 'models');
}

/** The model folder inside the installed `@vladmandic/face-api` package. */
export function defaultLandmarkModelDir(): string {
  const require = createRequire(import.meta.url);
  return path.join(path.dirname(require.resolve('@vladmandic/face-api/package.json')), 'model');
}

/**
 * Checks that every FaceMesh / BlazeFace / FaceRes model file exists with the expected size and sha256.
 * @throws AppError('FACE_MODEL_INVALID') naming the file and what is wrong.
 */
export function verifyFaceModelFiles(dir: string): Promise<void> {
  return verifyFiles(dir, FACE_MODEL_FILES, '@vladmandic/human 3.3.6');
}

/**
 * Checks the 68-point landmark net's files (manifest and weights) the same way.
 * @throws AppError('FACE_MODEL_INVALID') naming the file and what is wrong.
 */
export function verifyLandmark68Files(dir: string): Promise<void> {
  return verifyFiles(dir, LANDMARK68_MODEL_FILES, '@vladmandic/face-api 1.7.15');
}

async function verifyFiles(
  dir: string,
  files: readonly { file: string; bytes: number; sha256: string }[],
  pkg: string,
): Promise<void> {
  for (const m of files) {
    const file = path.join(dir, m.file);
    let data: Buffer;
    try {
      data = await readFile(file);
    } catch (err) {
      throw new AppError('FACE_MODEL_INVALID', `face model file missing: ${file} (reinstall ${pkg} with npm ci)`, {
        cause: err,
      });
    }
    if (data.length !== m.bytes) {
      throw new AppError(
        'FACE_MODEL_INVALID',
        `face model file ${file} has ${data.length} bytes, expected ${m.bytes}: corrupted or a different version (reinstall with npm ci)`,
      );
    }
    const sha = createHash('sha256').update(data).digest('hex');
    if (sha !== m.sha256) {
      throw new AppError(
        'FACE_MODEL_INVALID',
        `face model file ${file} is corrupted: sha256 ${sha}, expected ${m.sha256} (reinstall with npm ci)`,
      );
    }
  }
}

export interface FaceModelPoolOptions {
  /** Worker threads, each with its own copy of the models (~40 MB). Default: the number of cores, at most 4. */
  workers?: number;
  /** Folder of the model files; default the installed package's. */
  modelDir?: string;
  /** Folder of the 68-point landmark net's files; default the installed `@vladmandic/face-api` package's. */
  landmarkModelDir?: string;
  /** How long a worker may take to load its models; default 60 s. */
  loadTimeoutMs?: number;
}

interface Job {
  resolve: (face: FaceModelFace | null) => void;
  reject: (err: Error) => void;
}

class PoolWorker {
  readonly worker: Worker;
  readonly jobs = new Map<number, Job>();
  dead: Error | null = null;
  constructor(worker: Worker) {
    this.worker = worker;
  }
}

/**
 * A pool of worker threads running the independent face models. `analyze()` may be called many times without
 * waiting: jobs go to the worker with the fewest pending jobs and resolve in any order.
 */
export class FaceModelPool {
  readonly #workers: PoolWorker[];
  #nextId = 1;
  #closed = false;
  /** Total time the workers spent analysing (and of that, in the 68-point net), for reports. */
  #busyMs = 0;
  #busyMs68 = 0;
  #jobs = 0;

  private constructor(workers: PoolWorker[]) {
    this.#workers = workers;
  }

  /**
   * Verifies the model files (both packages'), starts the workers and waits until each has loaded its models.
   * @throws AppError('FACE_MODEL_INVALID') for a missing or corrupted model file; AppError('ENGINE_FAILED') when a
   * worker cannot load the models.
   */
  static async create(opts: FaceModelPoolOptions = {}): Promise<FaceModelPool> {
    const modelDir = opts.modelDir ?? defaultFaceModelDir();
    const landmarkModelDir = opts.landmarkModelDir ?? defaultLandmarkModelDir();
    await verifyFaceModelFiles(modelDir);
    await verifyLandmark68Files(landmarkModelDir);
    const n = opts.workers ?? Math.max(1, Math.min(4, os.availableParallelism()));
    if (!Number.isInteger(n) || n < 1) throw new TypeError('workers must be a positive integer');
    const spec = workerSpec(import.meta.url, 'faceModelsWorker');
    const started: PoolWorker[] = [];
    const timeoutMs = opts.loadTimeoutMs ?? 60_000;
    try {
      await Promise.all(
        Array.from({ length: n }, async () => {
          const worker = new Worker(spec.entry, {
            eval: spec.eval,
            workerData: { modelDir, landmarkModelDir } satisfies FaceModelWorkerData,
          });
          const pw = new PoolWorker(worker);
          started.push(pw);
          await new Promise<void>((resolve, reject) => {
            const timer = setTimeout(
              () => reject(new AppError('ENGINE_FAILED', `face models did not load within ${timeoutMs} ms`)),
              timeoutMs,
            );
            const onMessage = (msg: FaceModelReply): void => {
              if ('ready' in msg) {
                clearTimeout(timer);
                worker.off('message', onMessage);
                resolve();
              } else if ('fatal' in msg) {
                clearTimeout(timer);
                reject(new AppError('ENGINE_FAILED', `face models failed to load: ${msg.fatal}`));
              }
            };
            worker.on('message', onMessage);
            worker.once('error', (err) => {
              clearTimeout(timer);
              reject(new AppError('ENGINE_FAILED', `face model worker failed: ${err.message}`, { cause: err }));
            });
          });
        }),
      );
    } catch (err) {
      await Promise.all(started.map((w) => w.worker.terminate()));
      throw err;
    }
    const pool = new FaceModelPool(started);
    for (const pw of started) pool.#attach(pw);
    return pool;
  }

  #attach(pw: PoolWorker): void {
    pw.worker.on('message', (msg: FaceModelReply) => {
      if (!('id' in msg)) return;
      const job = pw.jobs.get(msg.id);
      if (!job) return;
      pw.jobs.delete(msg.id);
      if ('error' in msg) job.reject(new AppError('ENGINE_FAILED', `face model analysis failed: ${msg.error}`));
      else {
        this.#busyMs += msg.ms;
        this.#busyMs68 += msg.ms68;
        this.#jobs++;
        job.resolve(msg.face);
      }
    });
    const fail = (err: Error): void => {
      pw.dead = err;
      for (const job of pw.jobs.values()) job.reject(err);
      pw.jobs.clear();
    };
    pw.worker.on('error', (err) =>
      fail(new AppError('ENGINE_FAILED', `face model worker crashed: ${err.message}`, { cause: err })),
    );
    pw.worker.on('exit', (code) => {
      if (!this.#closed) fail(new AppError('ENGINE_FAILED', `face model worker exited (code ${code})`));
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  get size(): number {
    return this.#workers.length;
  }

  /**
   * Mean worker time per analysed image so far (ms), of which `meanMs68` in the 68-point net (the images where a face
   * was found, and so the 68 net ran, are counted with the rest), and how many images.
   */
  get stats(): { images: number; meanMs: number; meanMs68: number } {
    const n = this.#jobs;
    return { images: n, meanMs: n ? this.#busyMs / n : 0, meanMs68: n ? this.#busyMs68 / n : 0 };
  }

  /**
   * Finds the most confident face in an RGB image: its FaceMesh points (with iris), its 68 points from the second
   * landmark net and, when `descriptor` is set, its 1024-d descriptor. Resolves null when there is no face. The image
   * is copied: the caller may reuse its buffer.
   */
  analyze(img: RgbImage, opts: { descriptor: boolean }): Promise<FaceModelFace | null> {
    if (this.#closed) return Promise.reject(new AppError('INVALID_STATE', 'face model pool is closed'));
    if (img.data.length !== img.width * img.height * 3)
      return Promise.reject(new TypeError('analyze: image data length does not match width x height x 3'));
    const alive = this.#workers.filter((w) => !w.dead);
    if (!alive.length)
      return Promise.reject(this.#workers[0]?.dead ?? new AppError('ENGINE_FAILED', 'no face model worker'));
    let pw = alive[0]!;
    for (const w of alive) if (w.jobs.size < pw.jobs.size) pw = w;
    const id = this.#nextId++;
    const data = img.data.slice();
    const req: FaceModelRequest = { id, width: img.width, height: img.height, data, descriptor: opts.descriptor };
    return new Promise<FaceModelFace | null>((resolve, reject) => {
      pw.jobs.set(id, { resolve, reject });
      pw.worker.postMessage(req, [data.buffer]);
    });
  }

  /** Stops the workers; pending jobs are rejected. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const err = new AppError('INVALID_STATE', 'face model pool closed');
    for (const w of this.#workers) {
      for (const job of w.jobs.values()) job.reject(err);
      w.jobs.clear();
    }
    await Promise.all(this.#workers.map((w) => w.worker.terminate()));
  }
}
