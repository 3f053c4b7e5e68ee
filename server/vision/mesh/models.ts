/**
 * The FaceMesh tracker's networks as ONNX sessions: BlazeFace (detection), FaceMesh (468 points) and Iris (eye
 * contours and irises), converted from `@vladmandic/human`'s TensorFlow.js graphs by the project's converter
 * (models/tools/tfjs_convert) at set-up into models/face/ (models/face/README.md says why they are generated, not
 * committed). Each file is checked against the sha256 pinned in models/face/sources.json before it is loaded: a
 * missing, stale or corrupted file is refused with FACE_MODEL_INVALID saying how to rebuild it, never half loaded.
 *
 * Output names differ between converter versions and the networks' own exports, so outputs are found by their
 * element count (FaceMesh: 1404 = 468 x 3 points and 1 face flag; Iris: 228 = 76 x 3; BlazeFace: 896 anchors x 17
 * in one tensor or in four parts).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { AppError } from '../../errors.js';
import { OnnxModel } from '../../inference/onnx.js';
import { packageInfo } from '../../util/packageInfo.js';
import { MESH_MODEL_NAMES, parseFacePins, type MeshModelName } from './pins.js';

/** models/face of this checkout. */
export function defaultMeshModelDir(): string {
  return path.join(packageInfo().root, 'models', 'face');
}

const NAMES = MESH_MODEL_NAMES;
export type { MeshModelName };

/** models/face/sources.json of `dir`, parsed: `{ file, json }`. @throws AppError FACE_MODEL_INVALID */
export function readPins(dir: string): { file: string; json: unknown } {
  const file = path.join(dir, 'sources.json');
  try {
    return { file, json: JSON.parse(readFileSync(file, 'utf8')) as unknown };
  } catch (err) {
    throw new AppError('FACE_MODEL_INVALID', `cannot read ${file}: the face model pins are missing or broken`, {
      cause: err,
    });
  }
}

/** sha256 of each converted ONNX file as models/face/sources.json pins it. */
export function pinnedHashes(dir: string): Record<string, string> {
  return parseFacePins(readPins(dir).json);
}

/** The ONNX file `name` of `dir`, checked against its pin. @throws AppError FACE_MODEL_INVALID */
export function loadChecked(dir: string, name: string, pins: Record<string, string>): Buffer {
  const file = path.join(dir, `${name}.onnx`);
  const expected = pins[name];
  if (!expected) throw new AppError('FACE_MODEL_INVALID', `${path.join(dir, 'sources.json')} pins no ${name}.onnx`);
  let data: Buffer;
  try {
    data = readFileSync(file);
  } catch (err) {
    throw new AppError(
      'FACE_MODEL_INVALID',
      `face model missing: ${file} (run bash scripts/setup.sh: it converts the face models from node_modules)`,
      { cause: err },
    );
  }
  const sha = createHash('sha256').update(data).digest('hex');
  if (sha !== expected)
    throw new AppError(
      'FACE_MODEL_INVALID',
      `face model ${file} does not match its pinned sha256 (delete it and run bash scripts/setup.sh to convert it again)`,
    );
  return data;
}

/** The three sessions (shared per process by OnnxModel) and which outputs hold what. */
export class MeshModels {
  readonly detector: OnnxModel;
  readonly mesh: OnnxModel;
  readonly iris: OnnxModel;
  /** Input side of each network (pixels). */
  readonly detectorSize: number;
  readonly meshSize: number;
  readonly irisSize: number;
  #closed = false;

  private constructor(detector: OnnxModel, mesh: OnnxModel, iris: OnnxModel) {
    this.detector = detector;
    this.mesh = mesh;
    this.iris = iris;
    this.detectorSize = inputSide(detector);
    this.meshSize = inputSide(mesh);
    this.irisSize = inputSide(iris);
  }

  /** Verifies and loads the networks of `dir` (default models/face). @throws AppError FACE_MODEL_INVALID */
  static async load(dir = defaultMeshModelDir()): Promise<MeshModels> {
    const pins = pinnedHashes(dir);
    for (const n of NAMES) loadChecked(dir, n, pins);
    const opts = { executionProvider: 'cpu' as const, intraOpThreads: 1 };
    const loaded: OnnxModel[] = [];
    try {
      for (const n of NAMES) loaded.push(await OnnxModel.load(path.join(dir, `${n}.onnx`), opts));
    } catch (err) {
      for (const m of loaded) m.close();
      throw new AppError('FACE_MODEL_INVALID', `cannot load the face models in ${dir}`, { cause: err });
    }
    return new MeshModels(loaded[0]!, loaded[1]!, loaded[2]!);
  }

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.detector.close();
    this.mesh.close();
    this.iris.close();
  }
}

function inputSide(m: OnnxModel): number {
  const shape = m.inputs[0]?.shape ?? [];
  // NHWC [batch, H, W, 3].
  const h = shape[1];
  if (shape.length !== 4 || typeof h !== 'number' || shape[3] !== 3)
    throw new AppError(
      'FACE_MODEL_INVALID',
      `${path.basename(m.file)}: expected an NHWC RGB input, got [${shape.join(', ')}]`,
    );
  return h;
}
