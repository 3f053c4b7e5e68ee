/**
 * The training smoke test (CI does not train for real): `npm run train`'s script on two short shared clips, a few
 * steps of the teacher and the student, and an exported pack that the default engine loads and runs. Real clips,
 * the project's own tracker and warp for the dataset, Debian's PyTorch, real ONNX sessions.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../server/avatar/engines/index.js';
import { DefaultEngine } from '../../server/avatar/engines/default/engine.js';
import { ModelPack } from '../../server/inference/modelPack.js';
import { createLogger } from '../../server/logger.js';
import { createI420, rgbToI420 } from '../../server/util/image.js';
import { readVideoFrames } from '../../server/util/video.js';
import { drivingClip, repoRoot } from '../helpers/media.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'avatar-train-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

// The training package (python3 -m refiner, python3 -m refiner.packed) is found on PYTHONPATH, as scripts/train.ts does.
const PY_ENV = { ...process.env, PYTHONPATH: path.join(repoRoot, 'models', 'tools') };

function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd: repoRoot, env: PY_ENV, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code: code ?? 1, out }));
  });
}

describe('npm run train (smoke)', () => {
  it(
    'builds the dataset from two clips, trains a few steps, exports a pack the engine loads and runs',
    { timeout: 600_000 },
    async () => {
      const data = path.join(dir, 'data');
      await mkdir(data);
      for (const c of ['man_mouth_wide_open.mp4', 'child_talking_gaze.mp4'])
        await symlink(drivingClip(c), path.join(data, c));
      const cache = path.join(dir, 'cache');
      const out = path.join(dir, 'pack');
      const tsx = path.join(repoRoot, 'node_modules', '.bin', 'tsx');
      const args = [
        'scripts/train.ts',
        '--data',
        data,
        '--cache',
        cache,
        '--out',
        out,
        '--minutes',
        '0.05',
        '--student-minutes',
        '0.03',
        '--max-samples',
        '6',
        '--stride',
        '4',
      ];
      const r = await run(tsx, args);
      expect(r.code, r.out).toBe(0);
      expect(r.out).toMatch(/dataset 1\/2 child_talking_gaze\.mp4: 6 samples/);
      expect(r.out).toMatch(/dataset ready: 2 clips, 12 samples/);
      expect(r.out).toMatch(/exported encoder\.onnx, refiner\.onnx, refiner_teacher\.onnx and manifest\.json/);

      // The pack validates like every pack (hashes, names, shapes), and says what it was trained on.
      const pack = await ModelPack.load(out);
      expect(pack.manifest.resolution).toBe(128);
      expect([1, 2, 4]).toContain(pack.manifest.steps);
      expect(pack.manifest.files.map((f) => f.role).sort()).toEqual(['encoder', 'refiner', 'refiner_teacher']);
      // Trained from scratch, both step networks read the aligned source (the default --source).
      expect([pack.file('refiner').source, pack.file('refiner_teacher').source]).toEqual(['aligned', 'aligned']);
      pack.close();
      const training = JSON.parse(await readFile(path.join(out, 'training.json'), 'utf8')) as {
        samples: number;
        clips: number;
      };
      expect(training.samples).toBe(12);

      // A second run reuses the cached samples and resumes from the checkpoints (nothing left to train).
      const again = await run(tsx, args);
      expect(again.code, again.out).toBe(0);
      expect(again.out).toMatch(/dataset 2\/2 man_mouth_wide_open\.mp4: 6 samples \(0\.\d s\)/);
      expect(again.out).toMatch(/teacher: resumed at step \d+/);

      // The engine runs it: k = 0 and k = 1 give frames of the right size, and they differ.
      const engine = await createEngine(
        'default',
        {
          modelPack: path.join(repoRoot, 'models', 'default'),
          executionProvider: 'cpu',
          intraOpThreads: 1,
          outputSize: 256,
          refinerPack: out,
          steps: 1,
        },
        createLogger('test'),
      );
      try {
        expect(engine).toBeInstanceOf(DefaultEngine);
        const eng = engine as DefaultEngine;
        expect(eng.refiner?.defaultSteps).toBe(pack.manifest.steps);
        const frames = [];
        for await (const f of readVideoFrames(drivingClip('man_mouth_wide_open.mp4'), {
          format: 'rgb24',
          maxFrames: 75,
        }))
          frames.push(f);
        const first = { width: frames[0]!.width, height: frames[0]!.height, data: frames[0]!.data };
        const prepared = await eng.prepare(first);
        const drv = createI420(first.width, first.height);
        const k0 = createI420(prepared.width, prepared.height);
        const k1 = createI420(prepared.width, prepared.height);
        let differs = 0;
        let refined = 0;
        for (const [i, f] of frames.entries()) {
          rgbToI420({ width: f.width, height: f.height, data: f.data }, drv);
          eng.setSteps(0);
          eng.render(drv, k0, i * 33);
          eng.setSteps(1);
          const st = eng.render(drv, k1, i * 33 + 1);
          if (st.refineMs !== undefined) refined++;
          let d = 0;
          for (let j = 0; j < k0.data.length; j++) d += Math.abs(k0.data[j]! - k1.data[j]!);
          if (d > 0) differs++;
        }
        expect(k1.width).toBe(prepared.width);
        expect(refined).toBeGreaterThan(60);
        expect(differs).toBeGreaterThan(60);
        expect(() => eng.setSteps(9)).toThrow(TypeError);
      } finally {
        engine.close();
      }
    },
  );

  it(
    'trains from the packed dataset (the lent-GPU path, here on the CPU) and exports the handed-back weights',
    { timeout: 600_000 },
    async () => {
      // Uses the cache the first case built (the same two clips, 12 samples).
      const cache = path.join(dir, 'cache');
      const packed = path.join(dir, 'packed');
      const py = '/usr/bin/python3';
      const p = await run(py, ['-m', 'refiner.packed', 'pack', '--cache', cache, '--out', packed, '--crf', '12']);
      expect(p.code, p.out).toBe(0);
      const report = JSON.parse(await readFile(path.join(packed, '_packed.json'), 'utf8')) as {
        samples: number;
        mean_abs_error: Record<string, number>;
      };
      expect(report.samples).toBe(12);
      for (const k of ['warp', 'truth', 'drive']) expect(report.mean_abs_error[k]).toBeLessThan(0.02);

      // "On the GPU": train from the packed folder only (no cache), another width, augmentation, k = 1 students.
      const handBack = path.join(dir, 'handback');
      await mkdir(handBack);
      const t = await run(py, [
        '-m',
        'refiner',
        '--packed',
        packed,
        '--clips',
        'all',
        '--cache',
        path.join(dir, 'gpu-ck'),
        '--out',
        '-',
        '--device',
        'cpu',
        '--channels',
        '16,32,48',
        '--augment',
        '--warmup',
        '2',
        '--student-k',
        '1',
        '--minutes',
        '0.02',
        '--student-minutes',
        '0.01',
        '--val-every',
        '2',
        '--save-weights',
        path.join(handBack, 'weights.npz'),
      ]);
      expect(t.code, t.out).toBe(0);
      expect(t.out).toMatch(/data: 2 clips, \d+ train \/ \d+ validation samples, crop 128, on cpu/);
      const trained = JSON.parse(await readFile(path.join(handBack, 'training.json'), 'utf8')) as {
        channels: number[];
        student: { k_drawn: number[] };
        augment: boolean;
      };
      expect(trained.channels).toEqual([16, 32, 48]);
      expect(trained.student.k_drawn).toEqual([1]);
      expect(trained.augment).toBe(true);
      const bad = await run(py, [
        '-m',
        'refiner',
        '--packed',
        packed,
        '--clips',
        'all',
        '--cache',
        dir,
        '--out',
        '-',
        '--student-k',
        '3',
      ]);
      expect(bad.code).toBe(2);
      expect(bad.out).toContain('refiner: error BAD_ARGUMENT: --student-k: each k must be one of');

      // "Back here": the weights, validated on the raw cache and exported; the pack loads and the engine runs it.
      const out = path.join(dir, 'pack-from-weights');
      const e = await run(py, [
        '-m',
        'refiner',
        '--from-weights',
        path.join(handBack, 'weights.npz'),
        '--cache',
        cache,
        '--clips',
        'child_talking_gaze,man_mouth_wide_open',
        '--out',
        out,
        '--val-every',
        '2',
      ]);
      expect(e.code, e.out).toBe(0);
      expect(e.out).toMatch(/exported encoder\.onnx, refiner\.onnx, refiner_teacher\.onnx and manifest\.json/);
      const exported = JSON.parse(await readFile(path.join(out, 'training.json'), 'utf8')) as {
        channels: number[];
        exported_on: string;
        hardware: string;
      };
      expect(exported.channels).toEqual([16, 32, 48]);
      expect(exported.exported_on).toMatch(/^CPU, torch/);
      expect(await readFile(path.join(out, 'MODEL_CARD.md'), 'utf8')).toContain('16/32/48 channels');
      const pack = await ModelPack.load(out);
      // The packed folder carried the portrait canvases and alignments: the handed-back networks read the aligned source.
      expect([pack.file('refiner').source, pack.file('refiner_teacher').source]).toEqual(['aligned', 'aligned']);
      pack.close();
      const engine = await createEngine(
        'default',
        {
          modelPack: path.join(repoRoot, 'models', 'default'),
          executionProvider: 'cpu',
          intraOpThreads: 1,
          outputSize: 256,
          refinerPack: out,
          steps: 1,
        },
        createLogger('test'),
      );
      try {
        const eng = engine as DefaultEngine;
        let first: { width: number; height: number; data: Uint8Array } | null = null;
        for await (const f of readVideoFrames(drivingClip('man_mouth_wide_open.mp4'), {
          format: 'rgb24',
          maxFrames: 1,
        }))
          first = { width: f.width, height: f.height, data: f.data };
        const prepared = await eng.prepare(first!);
        const drv = createI420(first!.width, first!.height);
        rgbToI420(first!, drv);
        const o = createI420(prepared.width, prepared.height);
        eng.render(drv, o, 0);
        const st = eng.render(drv, o, 33);
        expect(st.refineMs).toBeDefined();
      } finally {
        engine.close();
      }
    },
  );

  it(
    'fine-tunes the student of an exported pack (roll and wedge augmentation) and exports a pack that loads',
    { timeout: 600_000 },
    async () => {
      // The pack and the cache of the first case: `npm run train -- --finetune-from PACK` reuses the samples, takes the
      // pack's weights from its ONNX files, trains only the student, and says so in training.json and the model card.
      const data = path.join(dir, 'data');
      const cache = path.join(dir, 'cache');
      const base = path.join(dir, 'pack');
      const out = path.join(dir, 'pack-finetuned');
      const tsx = path.join(repoRoot, 'node_modules', '.bin', 'tsx');
      const r = await run(tsx, [
        'scripts/train.ts',
        '--data',
        data,
        '--cache',
        cache,
        '--out',
        out,
        '--max-samples',
        '6',
        '--stride',
        '4',
        '--finetune-from',
        base,
        '--finetune-minutes',
        '0.03',
        '--roll',
        '15',
        '--wedges',
        '--batch',
        '4',
        '--student-k',
        '1',
        '--source',
        'region',
        '--residual',
        'features',
        // Every loss term a step: the face networks (MobileFace, FaceMesh) and the discriminators included.
        '--finetune-loss',
        'truth_l1=1,id=0.1,perceptual=0.5,landmarks=1,adv=0.05,fm=1',
        '--log-every',
        '1',
      ]);
      expect(r.code, r.out).toBe(0);
      expect(r.out).toMatch(/fine-tuning the student of .*pack \(trained on CPU/);
      expect(r.out).toContain('fine-tune: face networks loaded (MobileFace FaceMesh)');
      expect(r.out).toMatch(
        /fine-tune: step 1, .*\(truth_l1 [\d.]+, id [\d.]+, perceptual [\d.]+, landmarks [\d.]+, adv -?[\d.]+, fm [\d.]+; D margin face -?[\d.]+/,
      );
      expect(r.out).toMatch(/validation student_k1 \(rolled\): l1 0\.\d+/);
      expect(r.out).toContain("fine-tune: the student's source changes from aligned to region");
      const tr = JSON.parse(await readFile(path.join(out, 'training.json'), 'utf8')) as {
        finetune: {
          steps: number;
          roll_deg: number;
          wedges: boolean;
          k_drawn: number[];
          source: string;
          loss: [string, number][];
          d_lr: number;
        };
        prior_validation: Record<string, { l1: number }> | null;
        validation: Record<string, { l1: number; mouth_l1: number | null }>;
      };
      expect(tr.finetune.steps).toBeGreaterThan(0);
      expect(tr.finetune).toMatchObject({ roll_deg: 15, wedges: true, k_drawn: [1], source: 'region', d_lr: 2e-4 });
      expect(tr.finetune.loss.map(([name]) => name)).toEqual([
        'truth_l1',
        'id',
        'perceptual',
        'landmarks',
        'adv',
        'fm',
      ]);
      expect(tr.validation['student_k1 (rolled)']?.l1).toBeGreaterThan(0);
      expect(tr.validation['student_k1 (rolled)']?.mouth_l1).toBeNull();
      expect(await readFile(path.join(out, 'MODEL_CARD.md'), 'utf8')).toMatch(
        /\*\*Fine-tune:\*\* .*head roll of up to 15 degrees.* Loss: 1 x the weighted L1 to the true frame; 0\.1 x identity .*; 0\.05 x hinge loss against patch discriminators .*discriminators trained alongside from scratch, Adam lr 0\.0002\)/,
      );
      // The encoder and the teacher are frozen (the same bytes); the student changed.
      const basePack = await ModelPack.load(base);
      const before = basePack.manifest.files;
      basePack.close();
      const after = await ModelPack.load(out);
      const sha = (files: typeof before, role: string): string | undefined =>
        files.find((f) => f.role === role)?.sha256;
      expect(sha(after.manifest.files, 'refiner')).not.toBe(sha(before, 'refiner'));
      // The fine-tuned student reads the region as it is (--source region); the frozen teacher keeps its aligned source.
      expect([after.file('refiner').source, after.file('refiner_teacher').source]).toEqual(['region', 'aligned']);
      // --residual features: the engine keeps the student's change around the eyes and the mouth only.
      expect(after.file('refiner').residual).toBe('features');
      expect(after.file('refiner_teacher').residual).toBeUndefined();
      after.close();
      const frozen = async (file: string): Promise<boolean> =>
        Buffer.compare(await readFile(path.join(base, file)), await readFile(path.join(out, file))) === 0;
      expect(await frozen('encoder.onnx')).toBe(true);
      expect(await frozen('refiner_teacher.onnx')).toBe(true);

      // Not a pack: refused with what is missing.
      const bad = await run('/usr/bin/python3', [
        '-m',
        'refiner',
        '--cache',
        cache,
        '--clips',
        'child_talking_gaze',
        '--out',
        path.join(dir, 'not-written'),
        '--finetune-from',
        data,
      ]);
      expect(bad.code).toBe(2);
      expect(bad.out).toMatch(
        /refiner: error NOT_A_PACK: --finetune-from .*: not an exported refiner pack \(no training\.json/,
      );
      expect(existsSync(path.join(dir, 'not-written'))).toBe(false);
    },
  );

  it('refuses a cache inside the repository (real clips given) and missing data, each with its code', async () => {
    const tsx = path.join(repoRoot, 'node_modules', '.bin', 'tsx');
    // Real clips, so that the refusal is the cache's and not "no clips"; nothing may be written inside the repository.
    const data = path.join(dir, 'refusal-data');
    await mkdir(data);
    await symlink(drivingClip('man_mouth_wide_open.mp4'), path.join(data, 'man_mouth_wide_open.mp4'));
    const insideCache = path.join(repoRoot, 'tmp-cache-refused');
    const inside = await run(tsx, ['scripts/train.ts', '--data', data, '--cache', insideCache, '--dataset-only']);
    expect(inside.code, inside.out).toBe(2);
    expect(inside.out).toContain(
      `train: error CACHE_IN_REPO: --cache must be outside the repository (the samples are frames of third-party clips): ${insideCache}`,
    );
    expect(existsSync(insideCache)).toBe(false);
    const missing = await run(tsx, [
      'scripts/train.ts',
      '--data',
      path.join(dir, 'no-such-folder'),
      '--cache',
      path.join(dir, 'cache-unused'),
    ]);
    expect(missing.code).toBe(2);
    expect(missing.out).toContain('train: error NO_DATA: data folder not found');
    const none = await run(tsx, ['scripts/train.ts']);
    expect(none.code).toBe(2);
    expect(none.out).toContain('train: error BAD_ARGUMENT: --data DIR is required');
    const unknown = await run(tsx, ['scripts/train.ts', '--data', data, '--no-such-option']);
    expect(unknown.code).toBe(2);
    expect(unknown.out).toContain(
      "train: error BAD_ARGUMENT: Unknown option '--no-such-option' (npm run train -- --help)",
    );
    const help = await run(tsx, ['scripts/train.ts', '--help']);
    expect(help.code).toBe(0);
    expect(help.out).toMatch(/^usage: npm run train -- --data DIR \[options\]/);
  });
});
