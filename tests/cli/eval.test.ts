import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EvalReport } from '../../server/quality/evaluate.js';
import { decodeI420, writeSequenceY4m } from '../helpers/g2gMedia.js';
import { drivingClip, portraitFile } from '../helpers/media.js';
import { runCli } from './cliRunner.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'avatar-eval-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

// 480x480, 30 fps. The mouth is closed until frame ~61, opens wide over frames ~62-70 and stays open to ~95.
const clip = drivingClip('man_mouth_wide_open.mp4');
const SCORE_KEYS = [
  'l1',
  'ssim',
  'psnr',
  'akd',
  'pose_deg',
  'misses',
  'akd_regions',
  'akd_aligned',
  'pose_axes_deg',
  'mouth_l1',
  'eyes_l1',
  'fpd',
  'sharpness',
  'sharpness_eyes',
  'sharpness_mouth',
  'id_sim',
  'id_sim_p5',
  'pose_err_deg',
  'pose_err_axes_deg',
  'id_sim_driver',
  'akd_mesh',
  'aed_mesh',
  'blink_corr',
  'gaze_corr',
  'gaze_corr_eyes',
  'mouth_open_corr',
  'aed_mouth_mesh',
  'blink_corr_68',
  'mouth_open_corr_68',
  'aed_mouth_68',
  'mesh_misses',
];

async function readReport(file: string): Promise<EvalReport> {
  return JSON.parse(await readFile(file, 'utf8')) as EvalReport;
}

/** An I420 frame (side×side) moved `dx` pixels to the right (even), its left edge column repeated into the gap. */
function shiftRight(frame: Uint8Array, side: number, dx: number): Uint8Array {
  const out = new Uint8Array(frame.length);
  const plane = (offset: number, w: number, d: number): void => {
    for (let y = 0; y < w; y++) {
      const row = offset + y * w;
      for (let x = 0; x < w; x++) out[row + x] = frame[row + Math.max(0, x - d)]!;
    }
  };
  const c = side >> 1;
  plane(0, side, dx);
  plane(side * side, c, dx >> 1);
  plane(side * side + c * c, c, dx >> 1);
  return out;
}

describe('avatar eval (subprocess)', () => {
  it(
    '--self: frozen baseline gives sane numbers, and a model that reproduces the truth beats it',
    { timeout: 240_000 },
    async () => {
      // Frames 55..94: the portrait (frame 55) has a closed mouth, the truth opens it wide.
      // The passthrough engine outputs the driving frame itself, i.e. the truth (through I420): an upper bound.
      const json = path.join(dir, 'self.json');
      const sheet = path.join(dir, 'self.sheet.png');
      const r = await runCli([
        'eval',
        '--self',
        '--driving',
        clip,
        '--json',
        json,
        '--sheet',
        sheet,
        '--engine',
        'passthrough',
        '--start-frame',
        '55',
        '--max-frames',
        '40',
      ]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain('39/39 frames');
      const rep = await readReport(json);
      expect(rep.mode).toBe('self');
      expect(rep.engine).toBe('passthrough');
      expect(rep.rendered).toBe(39);
      expect(rep.frames + rep.truth_misses).toBe(39);
      expect(rep.frames).toBeGreaterThanOrEqual(35);
      expect(Object.keys(rep.model).sort()).toEqual([...SCORE_KEYS].sort());
      expect(Object.keys(rep.frozen).sort()).toEqual([...SCORE_KEYS].sort());
      expect(rep.output).toEqual({ width: 480, height: 480 });

      const fz = rep.frozen;
      // The frozen portrait is another frame than the truth: not a perfect score (the still-clip case below: it is one on
      // the frame it was taken from).
      expect(fz.l1!).toBeGreaterThan(0);
      expect(fz.akd!).toBeGreaterThan(0);
      expect(fz.misses).toBe(0);
      // The portrait's closed mouth is the region furthest from the truth.
      const regions = fz.akd_regions;
      expect(Object.keys(regions).sort()).toEqual(['brows', 'eyes', 'jaw', 'mouth', 'nose']);
      expect(regions.mouth!).toBeGreaterThan(regions.eyes!);
      expect(regions.mouth!).toBeGreaterThan(regions.nose!);
      expect(fz.akd_aligned!).toBeGreaterThan(0);
      const axes = fz.pose_axes_deg;
      expect((axes.yaw! + axes.pitch! + axes.roll!) / 3).toBeCloseTo(fz.pose_deg!, 3);

      // Per frame: where the truth's mouth is wide open, the closed-mouth portrait is far from it.
      const frames = rep.per_frame!.filter((f) => f.truth_face);
      const open = frames.filter((f) => f.truth_mouth! > 0.4);
      const closed = frames.filter((f) => f.truth_mouth! < 0.05);
      expect(open.length).toBeGreaterThanOrEqual(10);
      expect(closed.length).toBeGreaterThanOrEqual(3);
      const meanAkd = (fs: typeof frames): number => fs.reduce((a, f) => a + f.frozen!.akd!, 0) / fs.length;
      for (const f of open) expect(f.frozen!.akd!).toBeGreaterThan(0);
      expect(meanAkd(open)).toBeGreaterThan(2 * meanAkd(closed));

      // The truth-reproducing model: near-perfect crops and landmarks, far better than frozen.
      const m = rep.model;
      expect(m.ssim!).toBeGreaterThan(0.98);
      expect(m.ssim!).toBeGreaterThan(fz.ssim!);
      expect(m.psnr!).toBeGreaterThan(fz.psnr!);
      expect(m.l1!).toBeLessThan(fz.l1!);
      expect(m.akd!).toBeLessThan(0.6 * fz.akd!);
      expect(m.misses).toBe(0);
      expect(rep.goal.akd_ratio).toBeLessThan(0.6);
      expect(rep.goal.akd_met).toBe(true);
      // The independent pose agrees with the truth's (the frozen portrait's does not), the worst identity frames are
      // close to the mean, and the passthrough engine has no warp to fold.
      expect(m.pose_err_deg!).toBeLessThan(1);
      expect(fz.pose_err_deg!).toBeGreaterThan(m.pose_err_deg!);
      expect(m.id_sim_p5!).toBeLessThanOrEqual(m.id_sim!);
      expect(m.id_sim_p5!).toBeGreaterThan(0.9);
      expect(rep.fold_frames).toBe(0);
      expect(rep.goal.ssim_met).toBe(true);
      // The terminal summary shows both rows.
      expect(r.stderr).toMatch(/model +l1 [\d.]+ +ssim 0\.9\d+/);
      expect(r.stderr).toMatch(/frozen +l1/);
      expect(r.stderr).toMatch(/id_sim 0\.9\d\d +akd_mesh/);
      expect(r.stderr).toMatch(/\n +fpd [\d.]+ +sharpness [\d.]+ \(eyes [\d.]+, mouth [\d.]+\)/);

      // Independent scores (FaceMesh + descriptors). The truth-reproducing model: the same identity, the same points,
      // the same mouth and eyes, blinks and gaze that move with the truth's.
      expect(rep.steps).toBe(0);
      expect(rep.face_models).toContain('FaceMesh');
      expect(rep.id_every).toBe(5);
      expect(m.id_sim!).toBeGreaterThan(0.98);
      expect(m.mouth_l1!).toBeLessThan(0.005);
      expect(m.eyes_l1!).toBeLessThan(0.005);
      expect(m.akd_mesh!).toBeLessThan(0.015);
      expect(m.aed_mesh!).toBeLessThan(0.015);
      expect(m.blink_corr!).toBeGreaterThan(0.7);
      expect(m.gaze_corr!).toBeGreaterThan(0.5);
      expect(m.mesh_misses).toBe(0);
      expect(m.id_sim_driver).toBeNull();
      // The mouth opens wide in these frames: both landmark networks see the output's mouth open and close with the
      // truth's and the same mouth shape; the 68-point net follows the blinks too.
      expect(rep.face_models).toContain('68-point');
      expect(m.mouth_open_corr!).toBeGreaterThan(0.95);
      expect(m.mouth_open_corr_68!).toBeGreaterThan(0.95);
      expect(m.blink_corr_68!).toBeGreaterThan(0.7);
      expect(m.aed_mouth_mesh!).toBeLessThan(0.015);
      expect(m.aed_mouth_68!).toBeLessThan(0.02);
      expect(rep.timing.landmarks68_ms_per_image!).toBeGreaterThan(0);
      expect(rep.timing.landmarks68_ms_per_image!).toBeLessThan(rep.timing.face_models_ms_per_image!);
      // fpd and sharpness: the truth through I420 is nearly the truth (FaceRes's activations and the eye and mouth
      // detail); the closed-mouth still is further in fpd. fpd on the descriptor frames (every 5th), sharpness on all.
      expect(m.fpd!).toBeLessThan(0.02);
      expect(m.fpd!).toBeLessThan(0.5 * fz.fpd!);
      for (const k of ['sharpness', 'sharpness_eyes', 'sharpness_mouth'] as const) {
        expect(m[k]!, k).toBeGreaterThan(0.8);
        expect(m[k]!, k).toBeLessThan(1.25);
        expect(fz[k]!, k).toBeGreaterThan(0);
      }
      expect(rep.timing.fpd_ms_per_image!).toBeGreaterThan(0);
      for (const k of ['fpd', 'sharpness', 'sharpness_eyes', 'sharpness_mouth'] as const)
        expect(rep.definitions[k], k).toBeTruthy();
      // The frozen baseline against the truth-reproducing model on the same frames: a closed-mouth still of the same man
      // is further from every truth frame than the truth itself, most of all around the mouth (which opens in the
      // truth), and a still portrait has no blink or gaze series to correlate.
      expect(fz.id_sim!).toBeLessThan(m.id_sim!);
      for (const k of [
        'mouth_l1',
        'eyes_l1',
        'fpd',
        'akd_mesh',
        'aed_mesh',
        'aed_mouth_mesh',
        'aed_mouth_68',
      ] as const) {
        expect(fz[k]!, k).toBeGreaterThan(m[k]!);
      }
      expect(fz.mouth_l1!).toBeGreaterThan(fz.eyes_l1!);
      expect(fz.blink_corr).toBeNull();
      expect(fz.gaze_corr).toBeNull();
      expect(fz.mouth_open_corr).toBeNull();
      expect(fz.blink_corr_68).toBeNull();
      expect(fz.mouth_open_corr_68).toBeNull();
      expect(fz.mesh_misses).toBe(0);
      for (const k of ['id_sim', 'mouth_l1', 'eyes_l1', 'akd_mesh', 'aed_mesh'] as const)
        expect(m[k] === fz[k]).toBe(false);
      // Per frame: the mesh scores on every frame, id_sim on every 5th scored frame, region L1 largest where the mouth is open.
      const meshFrames = frames.filter((f) => f.model!.akd_mesh !== null);
      expect(meshFrames.length).toBe(frames.length);
      expect(frames.filter((f) => f.model!.id_sim !== null).length).toBe(Math.ceil(frames.length / 5));
      expect(frames.filter((f) => f.model!.fpd !== null).length).toBe(Math.ceil(frames.length / 5));
      expect(frames.filter((f) => f.model!.sharpness !== null).length).toBe(frames.length);
      const meanMouth = (fs: typeof frames): number => fs.reduce((a, f) => a + f.frozen!.mouth_l1!, 0) / fs.length;
      expect(meanMouth(open)).toBeGreaterThan(1.5 * meanMouth(closed));
      // The 68-point mouth distance on every frame, far larger where the truth's mouth is open than where it is closed.
      expect(frames.filter((f) => f.model!.aed_mouth_68 !== null).length).toBe(frames.length);
      const meanAed68 = (fs: typeof frames): number => fs.reduce((a, f) => a + f.frozen!.aed_mouth_68!, 0) / fs.length;
      expect(meanAed68(open)).toBeGreaterThan(3 * meanAed68(closed));

      // The contact sheet: a readable PNG with about 8 rows of three 192 px tiles.
      expect(rep.sheet).toEqual({ file: sheet, rows: 8, every: 5 });
      const meta = await sharp(sheet).metadata();
      expect(meta.format).toBe('png');
      expect(meta.width).toBeGreaterThan(3 * 192);
      expect(meta.height).toBeGreaterThan(8 * 192);
    },
  );

  it(
    '--self with the default engine: the output follows the truth better than the still portrait where the mouth opens',
    { timeout: 240_000 },
    async () => {
      const json = path.join(dir, 'default.json');
      const r = await runCli([
        'eval',
        '--self',
        '--driving',
        clip,
        '--json',
        json,
        '--engine',
        'default',
        '--start-frame',
        '55',
        '--max-frames',
        '30',
      ]);
      expect(r.code, r.stderr).toBe(0);
      const rep = await readReport(json);
      expect(rep.engine).toBe('default');
      expect(rep.rendered).toBe(29);
      expect(rep.model.misses).toBe(0);
      expect(rep.timing.render_ms.p50).toBeGreaterThan(0);
      const open = rep.per_frame!.filter((f) => f.truth_face && f.truth_mouth! > 0.4);
      expect(open.length).toBeGreaterThanOrEqual(10);
      const mean = (k: 'model' | 'frozen'): number => open.reduce((a, f) => a + f[k]!.akd!, 0) / open.length;
      expect(mean('model')).toBeLessThan(mean('frozen'));
    },
  );

  it(
    '--self with the portrait engine as the model scores exactly like the frozen baseline',
    { timeout: 120_000 },
    async () => {
      const json = path.join(dir, 'still.json');
      const r = await runCli([
        'eval',
        '--self',
        '--driving',
        clip,
        '--json',
        json,
        '--engine',
        'portrait',
        '--max-frames',
        '8',
        '--summary-only',
      ]);
      expect(r.code, r.stderr).toBe(0);
      const rep = await readReport(json);
      expect(rep.per_frame).toBeUndefined();
      expect(rep.model).toEqual(rep.frozen);
      expect(rep.goal.ssim_met).toBe(false);
    },
  );

  it(
    '--self on a still clip: the frozen portrait scores perfectly on its own frame, worse the further the truth is moved',
    { timeout: 180_000 },
    async () => {
      // A clip made of one frame (55: a closed mouth), first as it is (the portrait, then two truth frames), then moved
      // 4 and 12 px to the right. The passthrough engine outputs the driving frame itself.
      const side = 480;
      const frame = (await decodeI420(clip, { width: side, height: side, maxFrames: 56 }))[55]!;
      const y4m = await writeSequenceY4m({
        frames: [frame, shiftRight(frame, side, 4), shiftRight(frame, side, 12)],
        sequence: [0, 0, 0, 1, 1, 2, 2],
        width: side,
        height: side,
        out: path.join(dir, 'still.y4m'),
      });
      const json = path.join(dir, 'still-shift.json');
      const r = await runCli([
        'eval',
        '--self',
        '--driving',
        y4m,
        '--json',
        json,
        '--engine',
        'passthrough',
        '--id-every',
        '1',
      ]);
      expect(r.code, r.stderr).toBe(0);
      const rep = await readReport(json);
      expect(rep.rendered).toBe(6);
      const frames = rep.per_frame!;
      expect(frames.map((f) => f.truth_face)).toEqual([true, true, true, true, true, true]);
      const [same1, same2, near1, near2, far1, far2] = frames.map((f) => f.frozen!);
      process.stdout.write(`eval still clip, frozen per frame: ${JSON.stringify(frames.map((f) => f.frozen))}\n`);

      // The truth is the portrait's own frame: the frozen output is that picture (through the output's I420 once more),
      // with the same identity and landmarks (up to the tracker's own jitter: each stream's tracker starts from its
      // previous box, measured ~0.01 of the inter-ocular distance, under a third of what the 4 px move gives).
      for (const f of [same1!, same2!]) {
        expect(f.l1!).toBeLessThan(0.01);
        expect(f.ssim!).toBeGreaterThan(0.98);
        expect(f.akd!).toBeLessThan(0.02);
        expect(f.id_sim!).toBeGreaterThan(0.99);
      }
      // The passthrough output of that frame is the same picture as the frozen one: the same scores, exactly.
      expect(frames[0]!.model).toEqual(frames[0]!.frozen);
      expect(frames[1]!.model).toEqual(frames[1]!.frozen);
      // Moved further, scored worse: l1 and akd up, ssim down, at each step.
      const mean = (a: number | null, b: number | null): number => (a! + b!) / 2;
      const steps = [
        [same1!, same2!],
        [near1!, near2!],
        [far1!, far2!],
      ] as const;
      const l1 = steps.map(([a, b]) => mean(a.l1, b.l1));
      const ssim = steps.map(([a, b]) => mean(a.ssim, b.ssim));
      const akd = steps.map(([a, b]) => mean(a.akd, b.akd));
      const fpd = steps.map(([a, b]) => mean(a.fpd, b.fpd));
      expect(fpd[0]!).toBeLessThan(0.01);
      for (let i = 1; i < 3; i++) {
        expect(fpd[i]!).toBeGreaterThan(fpd[i - 1]!);
        expect(l1[i]!).toBeGreaterThan(l1[i - 1]!);
        expect(ssim[i]!).toBeLessThan(ssim[i - 1]!);
        expect(akd[i]!).toBeGreaterThan(akd[i - 1]!);
      }
      // The passthrough output follows the moved truth: better than the frozen portrait wherever the truth moved.
      for (const f of frames.slice(2)) {
        expect(f.model!.l1!).toBeLessThan(f.frozen!.l1!);
        expect(f.model!.akd!).toBeLessThan(f.frozen!.akd!);
      }
    },
  );

  it(
    'cross mode: motion scores only, and a portrait without a face counts every frame as a miss',
    { timeout: 120_000 },
    async () => {
      const json = path.join(dir, 'cross.json');
      const r = await runCli([
        'eval',
        '--portrait',
        portraitFile('animal_shiba_dog.png'),
        '--driving',
        clip,
        '--json',
        json,
        '--engine',
        'portrait',
        '--max-frames',
        '6',
        '--size',
        '256',
      ]);
      expect(r.code, r.stderr).toBe(0);
      const rep = await readReport(json);
      expect(rep.mode).toBe('cross');
      expect(rep.frames).toBe(6);
      for (const s of [rep.model, rep.frozen]) {
        expect([s.l1, s.ssim, s.psnr, s.akd, s.pose_deg]).toEqual([null, null, null, null, null]);
        expect(s.akd_regions.mouth).toBeNull();
        expect(s.akd_aligned).toBeNull();
        expect(s.misses).toBe(6);
      }
      expect(r.stderr).toContain('misses 6');
    },
  );

  it(
    'cross mode with a face: the still portrait scores the same as frozen, motion copied from the driver scores ~0',
    { timeout: 120_000 },
    async () => {
      const still = path.join(dir, 'cross-still.json');
      const a = await runCli([
        'eval',
        '--portrait',
        portraitFile('real_woman_dark_hair.png'),
        '--driving',
        clip,
        '--json',
        still,
        '--engine',
        'portrait',
        '--start-frame',
        '55',
        '--max-frames',
        '12',
        '--size',
        '256',
      ]);
      expect(a.code, a.stderr).toBe(0);
      const s = await readReport(still);
      expect(s.frozen.akd!).toBeGreaterThan(0);
      // The still portrait is measured exactly like the frozen baseline.
      expect(s.model).toEqual(s.frozen);
      expect(s.model.l1).toBeNull();

      const copy = path.join(dir, 'cross-copy.json');
      const b = await runCli([
        'eval',
        '--portrait',
        portraitFile('real_woman_dark_hair.png'),
        '--driving',
        clip,
        '--json',
        copy,
        '--engine',
        'passthrough',
        '--start-frame',
        '55',
        '--max-frames',
        '12',
        '--size',
        '480',
      ]);
      expect(b.code, b.stderr).toBe(0);
      const c = await readReport(copy);
      expect(c.model.misses).toBe(0);
      expect(c.model.akd!).toBeLessThan(0.5 * c.frozen.akd!);
      // The independent scores tell the same story: the output IS the driver (id_sim to the driver ~1, to the portrait
      // that of two different people), its motion agrees with the driver's; the frozen portrait is the portrait.
      expect(c.model.id_sim_driver!).toBeGreaterThan(0.95);
      expect(c.model.id_sim!).toBeLessThan(0.6);
      expect(c.frozen.id_sim!).toBeGreaterThan(0.97);
      expect(c.frozen.id_sim_driver!).toBeLessThan(0.6);
      expect(c.model.akd_mesh!).toBeLessThan(0.5 * c.frozen.akd_mesh!);
      expect(c.model.aed_mesh!).toBeLessThan(0.5 * c.frozen.aed_mesh!);
      expect(c.model.aed_mouth_mesh!).toBeLessThan(0.5 * c.frozen.aed_mouth_mesh!);
      expect(c.model.aed_mouth_68!).toBeLessThan(0.5 * c.frozen.aed_mouth_68!);
      expect(c.model.mouth_open_corr!).toBeGreaterThan(0.95);
      expect(c.model.mouth_open_corr_68!).toBeGreaterThan(0.95);
      expect(c.model.mouth_l1).toBeNull();
      for (const k of ['fpd', 'sharpness', 'sharpness_eyes', 'sharpness_mouth'] as const)
        expect(c.model[k], k).toBeNull();
      expect(c.timing.fpd_ms_per_image).toBeNull();
      expect(c.frozen.blink_corr).toBeNull();
      expect(c.frozen.blink_corr_68).toBeNull();
      expect(b.stderr).toContain('id_sim to the driver (leakage, lower is better)');
    },
  );

  it('gives clear errors for bad arguments and inputs, and writes no report', async () => {
    const json = path.join(dir, 'bad', 'never.json');
    const both = await runCli([
      'eval',
      '--self',
      '--portrait',
      portraitFile('real_woman_dark_hair.png'),
      '--driving',
      clip,
      '--json',
      path.join(dir, 'x.json'),
    ]);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('either --self or --portrait');
    const neither = await runCli(['eval', '--driving', clip, '--json', path.join(dir, 'x.json')]);
    expect(neither.code).toBe(2);
    expect(neither.stderr).toContain('--self');
    const noJson = await runCli(['eval', '--self', '--driving', clip]);
    expect(noJson.code).toBe(2);
    expect(noJson.stderr).toContain('--json is required');
    const missing = await runCli([
      'eval',
      '--self',
      '--driving',
      path.join(dir, 'nope.mp4'),
      '--json',
      path.join(dir, 'x.json'),
    ]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/\[NOT_FOUND\] driving clip not found/);
    const noDir = await runCli(['eval', '--self', '--driving', clip, '--json', json]);
    expect(noDir.code).toBe(1);
    expect(noDir.stderr).toMatch(/folder for the JSON report does not exist/);
    const steps = await runCli([
      'eval',
      '--self',
      '--driving',
      clip,
      '--json',
      path.join(dir, 'x.json'),
      '--engine',
      'portrait',
      '--steps',
      '2',
      '--max-frames',
      '3',
    ]);
    expect(steps.code).toBe(1);
    expect(steps.stderr).toMatch(/\[UNSUPPORTED\] engine "portrait" has no refiner: steps must be 0 \(got 2\)/);
    const badSteps = await runCli([
      'eval',
      '--self',
      '--driving',
      clip,
      '--json',
      path.join(dir, 'x.json'),
      '--steps=-1',
    ]);
    expect(badSteps.code).toBe(2);
    expect(badSteps.stderr).toContain('--steps must be a non-negative integer');
    const badSheet = await runCli([
      'eval',
      '--self',
      '--driving',
      clip,
      '--json',
      path.join(dir, 'x.json'),
      '--sheet',
      path.join(dir, 'x.jpg'),
    ]);
    expect(badSheet.code).toBe(2);
    expect(badSheet.stderr).toContain('--sheet must name a .png file');
    const tooFew = await runCli([
      'eval',
      '--self',
      '--driving',
      clip,
      '--json',
      path.join(dir, 'x.json'),
      '--max-frames',
      '1',
    ]);
    expect(tooFew.code).toBe(2);
    expect(tooFew.stderr).toMatch(/at least 2/);
    expect((await readdir(dir)).filter((f) => f.startsWith('x') || f.includes('partial'))).toEqual([]);
  });
});
