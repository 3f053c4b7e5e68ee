/**
 * Model packs: a folder with `manifest.json` and the ONNX files it lists. A pack is validated completely before any
 * of it is used (manifest fields, every file's presence and sha256, and each model's input/output names, dtypes and
 * shapes against the loaded session); anything wrong is refused with a ModelPackError naming the pack and the file,
 * and nothing stays loaded.
 *
 * manifest.json:
 * ```
 * { "name": "default", "version": "1.0.0", "license": "...", "description": "...",
 *   "resolution": 512,            // the generator's crop resolution
 *   "steps": 0,                   // refiner steps (0: warp generator only)
 *   "files": [ { "path": "generator.onnx", "role": "generator", "sha256": "<hex>",
 *                "inputs":  [ { "name": "source", "dtype": "float32", "shape": [1, 3, 512, 512] }, ... ],
 *                "outputs": [ { "name": "y", "dtype": "uint8", "shape": [1, 1, "H", "W"] }, ... ],
 *                "source": "aligned",          // optional, refiner step networks: "region" (default) or "aligned"
 *                "residual": "features" } ] }  // optional, refiner step networks: "paste" (default) or "features"
 * ```
 * A string dimension is dynamic (symbolic in the ONNX graph); a number must match exactly.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { ModelPackError } from '../errors.js';
import { OnnxModel, type SessionOptions, type TensorType, type ValueInfo } from './onnx.js';

export interface ManifestValue {
  name: string;
  dtype: TensorType;
  shape: (number | string)[];
}

export interface ManifestFile {
  /** Path relative to the pack folder (no `..`). */
  path: string;
  /** What the engine uses it for, e.g. 'generator'. Unique within the pack. */
  role: string;
  sha256: string;
  inputs: ManifestValue[];
  outputs: ManifestValue[];
  /** Refiner step networks only: which portrait picture the "source" input is. "region" (the default): the
   * portrait's paste region as it is; "aligned": that region moved per frame onto the warp's target head
   * (refinerCrop.ts sampleAligned). */
  source?: 'region' | 'aligned';
  /** Refiner step networks only: where the engine keeps the network's change to the warp output. "paste" (the
   * default): the whole paste region; "features": around the eyes and the mouth only (refinerCrop.ts featureMask). */
  residual?: 'paste' | 'features';
}

export interface Manifest {
  name: string;
  version: string;
  license: string;
  description?: string;
  /** Generator crop resolution (pixels). */
  resolution: number;
  /** Refiner steps (0 = none). */
  steps: number;
  files: ManifestFile[];
}

const dtypes: readonly string[] = [
  'float32',
  'float16',
  'float64',
  'uint8',
  'int8',
  'uint16',
  'int16',
  'int32',
  'int64',
  'bool',
];

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Validates the manifest's structure; throws ModelPackError (file "manifest.json") naming the bad field. */
export function parseManifest(packName: string, text: string): Manifest {
  const fail = (msg: string): never => {
    throw new ModelPackError(packName, 'manifest.json', msg);
  };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ModelPackError(packName, 'manifest.json', 'not valid JSON', { cause: err });
  }
  if (!isRecord(json)) return fail('must be a JSON object');
  const str = (o: Record<string, unknown>, k: string, where: string): string => {
    const v = o[k];
    if (typeof v !== 'string' || v.length === 0) fail(`"${where}${k}" must be a non-empty string`);
    return v as string;
  };
  const int = (o: Record<string, unknown>, k: string, min: number): number => {
    const v = o[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) fail(`"${k}" must be an integer >= ${min}`);
    return v as number;
  };
  const name = str(json, 'name', '');
  const version = str(json, 'version', '');
  const license = str(json, 'license', '');
  const resolution = int(json, 'resolution', 1);
  const steps = int(json, 'steps', 0);
  const description = typeof json.description === 'string' ? json.description : undefined;
  if (!Array.isArray(json.files) || json.files.length === 0) fail('"files" must be a non-empty array');
  const roles = new Set<string>();
  const values = (f: Record<string, unknown>, k: 'inputs' | 'outputs', where: string): ManifestValue[] => {
    const arr = f[k];
    if (!Array.isArray(arr) || arr.length === 0) fail(`"${where}${k}" must be a non-empty array`);
    const seen = new Set<string>();
    return (arr as unknown[]).map((v, i) => {
      const w = `${where}${k}[${i}].`;
      if (!isRecord(v)) return fail(`"${where}${k}[${i}]" must be an object`);
      const n = str(v, 'name', w);
      if (seen.has(n)) fail(`duplicate ${k.slice(0, -1)} "${n}" in "${where}${k}"`);
      seen.add(n);
      const dtype = str(v, 'dtype', w);
      if (!dtypes.includes(dtype)) fail(`"${w}dtype" must be one of ${dtypes.join('|')}`);
      const shape = v.shape;
      if (
        !Array.isArray(shape) ||
        !shape.every(
          (d) => (typeof d === 'number' && Number.isInteger(d) && d >= 0) || (typeof d === 'string' && d.length > 0),
        )
      ) {
        fail(`"${w}shape" must be an array of non-negative integers or dimension names`);
      }
      return { name: n, dtype: dtype as TensorType, shape: shape as (number | string)[] };
    });
  };
  const files = (json.files as unknown[]).map((f, i): ManifestFile => {
    const where = `files[${i}].`;
    if (!isRecord(f)) return fail(`"files[${i}]" must be an object`);
    const p = str(f, 'path', where);
    if (path.isAbsolute(p) || p.split(/[\\/]/).includes('..')) fail(`"${where}path" must stay inside the pack`);
    const role = str(f, 'role', where);
    if (roles.has(role)) fail(`duplicate role "${role}"`);
    roles.add(role);
    const sha256 = str(f, 'sha256', where).toLowerCase();
    if (!/^[0-9a-f]{64}$/.test(sha256)) fail(`"${where}sha256" must be 64 hex digits`);
    const source = f.source;
    if (source !== undefined && source !== 'region' && source !== 'aligned')
      fail(`"${where}source" must be "region" or "aligned"`);
    const residual = f.residual;
    if (residual !== undefined && residual !== 'paste' && residual !== 'features')
      fail(`"${where}residual" must be "paste" or "features"`);
    return {
      path: p,
      role,
      sha256,
      inputs: values(f, 'inputs', where),
      outputs: values(f, 'outputs', where),
      ...(source !== undefined ? { source: source as 'region' | 'aligned' } : {}),
      ...(residual !== undefined ? { residual: residual as 'paste' | 'features' } : {}),
    };
  });
  return { name, version, license, description, resolution, steps, files };
}

function fmtShape(s: readonly (number | string)[]): string {
  return `[${s.join(', ')}]`;
}

/** Compares a manifest's declared values with the session's; returns the first mismatch or null. */
export function compareValues(
  kind: 'input' | 'output',
  declared: ManifestValue[],
  actual: readonly ValueInfo[],
): string | null {
  const names = (vs: readonly { name: string }[]): string => vs.map((v) => v.name).join(', ');
  if (declared.length !== actual.length || declared.some((d) => !actual.find((a) => a.name === d.name))) {
    return `${kind} names differ: manifest has [${names(declared)}], model has [${names(actual)}]`;
  }
  for (const d of declared) {
    const a = actual.find((v) => v.name === d.name)!;
    if (a.type !== d.dtype) return `${kind} "${d.name}" dtype: manifest ${d.dtype}, model ${a.type}`;
    const same =
      a.shape.length === d.shape.length &&
      d.shape.every((dim, i) => (typeof dim === 'number' ? a.shape[i] === dim : typeof a.shape[i] === 'string'));
    if (!same) return `${kind} "${d.name}" shape: manifest ${fmtShape(d.shape)}, model ${fmtShape(a.shape)}`;
  }
  return null;
}

/**
 * A validated, loaded model pack. {@link ModelPack.load} refuses a broken pack with a ModelPackError; `model(role)`
 * hands out the loaded models; `close()` releases them (idempotent).
 */
export class ModelPack {
  readonly dir: string;
  readonly manifest: Manifest;
  readonly #models: Map<string, OnnxModel>;
  #closed = false;

  private constructor(dir: string, manifest: Manifest, models: Map<string, OnnxModel>) {
    this.dir = dir;
    this.manifest = manifest;
    this.#models = models;
  }

  get name(): string {
    return this.manifest.name;
  }
  get closed(): boolean {
    return this.#closed;
  }

  /** Validates and loads the pack in `dir` (see the module comment for what is checked). */
  static async load(dir: string, options: Partial<SessionOptions> = {}): Promise<ModelPack> {
    const abs = path.resolve(dir);
    const folderName = path.basename(abs);
    let text: string;
    try {
      text = await readFile(path.join(abs, 'manifest.json'), 'utf8');
    } catch (err) {
      throw new ModelPackError(folderName, 'manifest.json', 'cannot be read', { cause: err });
    }
    const manifest = parseManifest(folderName, text);
    const pack = manifest.name;
    // Check every file before loading any model, so a broken pack is never half loaded.
    for (const f of manifest.files) {
      let bytes: Buffer;
      try {
        bytes = await readFile(path.join(abs, f.path));
      } catch (err) {
        throw new ModelPackError(pack, f.path, 'missing or unreadable', { cause: err });
      }
      const sha = createHash('sha256').update(bytes).digest('hex');
      if (sha !== f.sha256)
        throw new ModelPackError(pack, f.path, `sha256 mismatch: manifest ${f.sha256}, file ${sha}`);
    }
    const models = new Map<string, OnnxModel>();
    try {
      for (const f of manifest.files) {
        let model: OnnxModel;
        try {
          model = await OnnxModel.load(path.join(abs, f.path), options);
        } catch (err) {
          throw new ModelPackError(pack, f.path, `cannot be loaded by onnxruntime: ${(err as Error).message}`, {
            cause: err,
          });
        }
        models.set(f.role, model);
        const bad = compareValues('input', f.inputs, model.inputs) ?? compareValues('output', f.outputs, model.outputs);
        if (bad) throw new ModelPackError(pack, f.path, bad);
      }
    } catch (err) {
      for (const m of models.values()) m.close();
      throw err;
    }
    return new ModelPack(abs, manifest, models);
  }

  /** The loaded model for `role`; throws ModelPackError when the pack has none. */
  model(role: string): OnnxModel {
    const m = this.#models.get(role);
    if (!m || this.#closed)
      throw new ModelPackError(this.name, undefined, m ? 'pack is closed' : `has no "${role}" model`);
    return m;
  }

  /** The manifest entry for `role`. */
  file(role: string): ManifestFile {
    const f = this.manifest.files.find((x) => x.role === role);
    if (!f) throw new ModelPackError(this.name, undefined, `has no "${role}" model`);
    return f;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const m of this.#models.values()) m.close();
    this.#models.clear();
  }
}
