/**
 * FaceRes's taps: the intermediate activations that the converter adds as extra ONNX outputs (the pin's `taps` in
 * models/face/sources.json; models/tools/tfjs_convert/onnx_export.py) and that the quality evaluation's fpd reads.
 *
 * Real things only: faceres.onnx built by the converter's own `build-face-models --only faceres` into a temp folder,
 * run by onnxruntime-node (graph optimisation off and fully on) on the aligned crop of a real portrait, cut as
 * `avatar eval` cuts it (dlib landmarks, FFHQ crop, resized to 224x224); the same tfjs model run as a PyTorch module
 * with `TfjsModule(..., capture=[taps])` through `python3 -m tfjs_convert check`, which fails unless every tap is
 * within 1e-3 of its range. The model's own outputs keep their names, order and shapes; the taps follow them.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RgbImage } from '../../server/types/image.js';
import { loadImageRgb, resizeRgb, rgbToGray } from '../../server/util/image.js';
import { ffhqCrop, warpCrop } from '../../server/vision/faceCrop.js';
import { FaceTracker } from '../../server/vision/tracker.js';
import { portraitFile, repoRoot } from '../helpers/media.js';

const PYTHON = '/usr/bin/python3';
const TOOLS = path.join(repoRoot, 'models', 'tools');
const SOURCES = path.join(repoRoot, 'models', 'face', 'sources.json');
const FACERES_JSON = path.join(repoRoot, 'node_modules', '@vladmandic', 'human', 'models', 'faceres.json');
const TOL = 1e-3;
const OWN_OUTPUTS = [
  ['gender_pred/Sigmoid', [1, 1]],
  ['global_pooling/Mean', [1, 1024]],
  ['age_pred/Softmax', [1, 100]],
] as const;
/** Each tap's NHWC shape for one 224x224 crop. */
const TAP_SHAPES: Record<string, number[]> = {
  'conv_pw_1_relu/clip_by_value': [1, 112, 112, 64],
  'conv_pw_3_relu/clip_by_value': [1, 56, 56, 128],
  'conv_pw_5_relu/clip_by_value': [1, 28, 28, 256],
  'conv_pw_11_relu/clip_by_value': [1, 14, 14, 512],
};

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** `python3 -m tfjs_convert ...` from models/tools. */
function python(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn(PYTHON, ['-m', 'tfjs_convert', ...args], { cwd: TOOLS, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

/** A float32 .npy file (format 1.0, little-endian, C order). */
function npy(data: Float32Array, shape: readonly number[]): Buffer {
  const dict = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const pad = (64 - ((10 + dict.length + 1) % 64)) % 64;
  const header = Buffer.from(dict + ' '.repeat(pad) + '\n', 'latin1');
  const head = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, header.length & 255, header.length >> 8]);
  return Buffer.concat([head, header, Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}

/** The aligned 256x256 face crop `avatar eval` scores (FFHQ crop from the dlib landmarks). */
async function evalCrop(file: string): Promise<RgbImage> {
  const img = await loadImageRgb(file);
  const tracker = await FaceTracker.create();
  const face = tracker.track(rgbToGray(img), 0);
  if (!face) throw new Error(`no face found in ${file}`);
  return warpCrop(img, ffhqCrop(face.rawLandmarks, 256));
}

describe('tfjs_convert: FaceRes taps', () => {
  let dir: string;
  let onnxFile: string;
  let taps: string[];
  let input: Float32Array;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'faceres-taps-'));
    const build = await python(['build-face-models', '--only', 'faceres', '--out', dir]);
    expect(build.code, build.stderr).toBe(0);
    onnxFile = path.join(dir, 'faceres.onnx');
    const pin = (
      JSON.parse(await readFile(SOURCES, 'utf8')) as { models: { faceres: { taps: string[]; onnx_sha256: string } } }
    ).models.faceres;
    taps = pin.taps;
    expect(
      createHash('sha256')
        .update(await readFile(onnxFile))
        .digest('hex'),
    ).toBe(pin.onnx_sha256);
    const crop = resizeRgb(await evalCrop(portraitFile('real_man_obama.jpg')), 224, 224);
    input = Float32Array.from(crop.data); // FaceRes reads 0..255
  }, 120_000);

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("pins four taps spread over the network, after the model's own outputs", () => {
    expect(taps).toEqual(Object.keys(TAP_SHAPES));
  });

  it(
    'onnxruntime (optimised and not) gives the own outputs unchanged and the taps as PyTorch captures them, within 1e-3 of their range',
    { timeout: 240_000 },
    async () => {
      const sessions = await Promise.all(
        (['disabled', 'all'] as const).map((level) =>
          ort.InferenceSession.create(onnxFile, { graphOptimizationLevel: level, intraOpNumThreads: 1 }),
        ),
      );
      const work = await mkdtemp(path.join(dir, 'check-'));
      await writeFile(path.join(work, 'input.npy'), npy(input, [1, 224, 224, 3]));
      for (const [s, session] of sessions.entries()) {
        expect(session.inputNames).toEqual(['input']);
        expect(session.outputNames).toEqual([...OWN_OUTPUTS.map(([n]) => n), ...taps.map((t) => `${t}:0`)]);
        const got = await session.run({ input: new ort.Tensor('float32', input, [1, 224, 224, 3]) });
        for (const [name, shape] of OWN_OUTPUTS) expect([...got[name]!.dims], name).toEqual(shape);
        const expected: string[] = [];
        for (const [i, t] of taps.entries()) {
          const out = got[`${t}:0`]!;
          expect([...out.dims], t).toEqual(TAP_SHAPES[t]);
          const data = out.data as Float32Array;
          // ReLU6 activations: in [0, 6], and not all zero on a face.
          expect(Math.min(...data.subarray(0, 10_000))).toBeGreaterThanOrEqual(0);
          expect(
            data.some((v) => v > 0.5),
            t,
          ).toBe(true);
          const file = path.join(work, `s${s}-tap${i}.npy`);
          await writeFile(file, npy(data, TAP_SHAPES[t]!));
          expected.push('--expected', `${t}=${file}`);
        }
        // The own outputs too: the tapped file computes them as the PyTorch module does.
        for (const [name, shape] of OWN_OUTPUTS) {
          const file = path.join(work, `s${s}-${name.replace(/\W/g, '_')}.npy`);
          await writeFile(file, npy(got[name]!.data as Float32Array, shape));
          expected.push('--expected', `${name}=${file}`);
        }
        const check = await python([
          'check',
          FACERES_JSON,
          '--input',
          path.join(work, 'input.npy'),
          '--tol',
          `${TOL}`,
          ...expected,
        ]);
        expect(check.code, `${check.stdout}${check.stderr}`).toBe(0);
        for (const t of taps) expect(check.stdout).toMatch(new RegExp(`^${t}: max abs diff .* ok$`, 'm'));
      }
      await Promise.all(sessions.map((s) => s.release()));
    },
  );
});
