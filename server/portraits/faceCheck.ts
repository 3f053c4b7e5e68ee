/**
 * FaceChecker: refuses an uploaded portrait without a detectable face (AppError 'NO_FACE', 422) at upload time, so a
 * performer never goes live with a black or frozen stream. Detection runs in one lazily started worker thread shared
 * by all uploads; a crashed worker fails the pending checks with ENGINE_FAILED and is started again on the next one.
 */
import { Worker } from 'node:worker_threads';
import { AppError } from '../errors.js';
import { getLogLevel, type Logger } from '../logger.js';
import type { RgbImage } from '../types/image.js';
import { workerSpec } from '../util/worker.js';
import type { FaceCheckReply, FaceCheckRequest } from './faceCheckWorker.js';

interface Pending {
  resolve: (faces: number) => void;
  reject: (err: AppError) => void;
}

export class FaceChecker {
  readonly #log: Logger;
  #worker: Worker | null = null;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #closed = false;

  constructor(log: Logger) {
    this.#log = log;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Resolves when the portrait has at least one face; throws AppError('NO_FACE') otherwise. */
  async check(rgb: RgbImage): Promise<void> {
    const faces = await this.#count(rgb);
    if (faces === 0) {
      throw new AppError(
        'NO_FACE',
        'no face was found in this image: choose a portrait where a face is clearly visible',
      );
    }
  }

  #count(rgb: RgbImage): Promise<number> {
    if (this.#closed) return Promise.reject(new AppError('INVALID_STATE', 'face check is closed'));
    const w = this.#ensureWorker();
    const id = this.#nextId++;
    return new Promise<number>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      const data = rgb.data.slice();
      const req: FaceCheckRequest = { id, width: rgb.width, height: rgb.height, data };
      w.postMessage(req, [data.buffer]);
    });
  }

  #ensureWorker(): Worker {
    if (this.#worker) return this.#worker;
    const spec = workerSpec(import.meta.url, 'faceCheckWorker');
    const w = new Worker(spec.entry, { eval: spec.eval, name: 'face-check', workerData: { logLevel: getLogLevel() } });
    w.unref();
    w.on('message', (msg: FaceCheckReply) => {
      const p = this.#pending.get(msg.id);
      if (!p) return;
      this.#pending.delete(msg.id);
      if ('error' in msg) p.reject(new AppError('ENGINE_FAILED', 'face detection failed'));
      else p.resolve(msg.faces);
    });
    const fail = (err: Error): void => {
      if (this.#worker !== w) return;
      this.#worker = null;
      if (!this.#closed) this.#log.error('face check worker stopped', { err });
      for (const p of this.#pending.values()) p.reject(new AppError('ENGINE_FAILED', 'face detection stopped'));
      this.#pending.clear();
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`exit code ${code}`)));
    this.#worker = w;
    return w;
  }

  /** Idempotent: fails pending checks and terminates the worker. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const w = this.#worker;
    this.#worker = null;
    for (const p of this.#pending.values()) p.reject(new AppError('INVALID_STATE', 'face check is closed'));
    this.#pending.clear();
    if (w) await w.terminate();
  }
}
