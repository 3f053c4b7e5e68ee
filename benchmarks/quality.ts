/**
 * `npm run bench -- quality [--engine NAME] [--steps K] [--teacher] [--max-frames N] [--clips a,b] [--cross P1,P2|none]
 *   [--cross-clips a,b] [--size PX] [--id-every N] [--no-sheets] [--name RESULT] [--driving-dir DIR] [--portrait-dir DIR]`
 *
 * Runs the offline evaluation (server/quality/evaluate.ts, the same code as `avatar eval`) on every shared driving
 * clip in self-reenactment mode, and cross-reenactment of six shared portraits (a photo, a painting, a cartoon, an
 * anime drawing, a 3D render, glasses) by four clips (tongue, wink, wide-open mouth, speech with head motion), and
 * writes benchmarks/results/quality.json: per run the model's and the frozen baseline's scores (dlib and the
 * independent face models), whether the goals hold, timings, and findings in words; plus one contact sheet per run
 * in benchmarks/results/quality-sheets/ (git-ignored: the sheets hold frames of third-party clips and portraits, which
 * are never committed).
 * --max-frames defaults to 150 per clip (5 s at 30 fps) to keep a full run within minutes on 2 cores; 0 = all frames.
 * --name writes benchmarks/results/RESULT.json (and its sheets under quality-sheets/RESULT/) instead of quality.json,
 * e.g. to keep the refiner's k = 1, 2, 4 and teacher runs beside the warp-only run.
 * --driving-dir and --portrait-dir read the clips and portraits from elsewhere than ../shared/media (default
 * MEDIA/driving and MEDIA/portraits): the refiner's validation clips of ../shared/train/clips (never trained on) and
 * the portraits of ../shared/train/portraits (the refiner trains on clips only), so that choices about the refiner
 * can be made on identity scores without the held-out clips.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../server/config.js';
import { setLogLevel } from '../server/logger.js';
import { loadPortrait, openEngine } from '../server/quality/cli.js';
import { EVAL_DEFINITIONS, evaluate, type EvalReport, type Scores } from '../server/quality/evaluate.js';
import { FaceModelPool } from '../server/quality/faceModels.js';
import { FacePerceptual } from '../server/quality/facePerceptual.js';
import { FaceTracker } from '../server/vision/tracker.js';
import { mediaDir } from '../scripts/testData.js';
import { flag, parseOptions, str } from './lib/args.js';
import { summarize, writeResult } from './lib/stats.js';

const here = path.dirname(new URL(import.meta.url).pathname);
const media = mediaDir;

export interface ClipResult {
  clip: string;
  mode: 'self' | 'cross';
  portrait: string;
  frames: number;
  rendered: number;
  truth_misses: number;
  model: Scores;
  frozen: Scores;
  goal: EvalReport['goal'];
  output: EvalReport['output'];
  render_ms: EvalReport['timing']['render_ms'];
  eval_s: number;
  /** Frames rendered with a folded warp (0 with the engine's fold check) and frames the check took back. */
  fold_frames: number;
  fold_fixed_frames: number;
  /** Contact sheet, relative to benchmarks/results (git-ignored). */
  sheet: string | null;
}

/** Cross-reenactment defaults: one portrait of each kind the product must handle, driven by the hardest clips. */
export const DEFAULT_CROSS_PORTRAITS = [
  'real_woman_dark_hair.png', // photo
  'painting_black_woman_afro.png', // painting
  'cartoon_caricature_man.png', // flat 2D cartoon
  'anime_spiky_blond_hair.png', // anime
  'cartoon_3d_boy.jpg', // 3D render
  'real_older_man_glasses.jpg', // glasses
];
export const DEFAULT_CROSS_CLIPS = [
  'woman_tongue_crossed_eyes_grimace.mp4',
  'woman_wink_frown_surprise.mp4',
  'man_mouth_wide_open.mp4',
  'woman_speech_head_motion.mp4',
];

function meanOf(values: (number | null)[]): number | null {
  const v = values.filter((x): x is number => x !== null);
  return v.length ? Number((v.reduce((a, b) => a + b, 0) / v.length).toFixed(6)) : null;
}

function aggregate(rows: ClipResult[]): Record<string, unknown> {
  const keys = [
    'l1',
    'ssim',
    'psnr',
    'mouth_l1',
    'eyes_l1',
    'fpd',
    'sharpness',
    'sharpness_eyes',
    'sharpness_mouth',
    'akd',
    'akd_aligned',
    'pose_deg',
    'id_sim',
    'id_sim_p5',
    'pose_err_deg',
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
  ] as const;
  const side = (which: 'model' | 'frozen'): Record<string, number | null> =>
    Object.fromEntries(keys.map((k) => [k, meanOf(rows.map((r) => r[which][k]))]));
  const regions = (which: 'model' | 'frozen'): Record<string, number | null> =>
    Object.fromEntries(
      Object.keys(rows[0]?.model.akd_regions ?? {}).map((k) => [
        k,
        meanOf(rows.map((r) => r[which].akd_regions[k as keyof Scores['akd_regions']])),
      ]),
    );
  const axes = (which: 'model' | 'frozen'): Record<string, number | null> =>
    Object.fromEntries(
      (['yaw', 'pitch', 'roll'] as const).map((k) => [k, meanOf(rows.map((r) => r[which].pose_axes_deg[k]))]),
    );
  const block = (which: 'model' | 'frozen'): Record<string, unknown> => ({
    ...side(which),
    misses: rows.reduce((a, r) => a + r[which].misses, 0),
    mesh_misses: rows.reduce((a, r) => a + r[which].mesh_misses, 0),
    akd_regions: regions(which),
    pose_axes_deg: axes(which),
  });
  return {
    clips: rows.length,
    model: block('model'),
    frozen: block('frozen'),
    akd_goal_met: rows.filter((r) => r.goal.akd_met).length,
    ssim_goal_met: rows.filter((r) => r.goal.ssim_met).length,
  };
}

/** Plain-words findings for the engine engineer (a pure function of the per-clip rows). */
export function findings(rows: ClipResult[]): string[] {
  const out: string[] = [];
  for (const r of rows) {
    const tag = `${r.mode} ${r.clip}${r.mode === 'cross' ? ` <- ${path.basename(r.portrait)}` : ''}`;
    if (r.goal.akd_met === false) {
      out.push(
        `${tag}: akd ${r.model.akd} vs frozen ${r.frozen.akd} (ratio ${r.goal.akd_ratio}, goal <= 0.6): the output's landmarks do not follow the driver closely enough`,
      );
    }
    if (r.goal.ssim_met === false)
      out.push(
        `${tag}: ssim ${r.model.ssim} <= frozen ${r.frozen.ssim}: the rendered face crop is further from the truth than the still portrait`,
      );
    const al = r.model.akd_aligned;
    const fal = r.frozen.akd_aligned;
    if (al !== null && r.model.akd !== null && r.model.akd > 0.1 && al < 0.3 * r.model.akd) {
      out.push(
        `${tag}: akd ${r.model.akd} but only ${al} after similarity alignment: the error is head placement (the driver moves across the frame or changes size), not expression`,
      );
    }
    if (al !== null && fal !== null && fal > 0 && al > 0.9 * fal) {
      out.push(`${tag}: akd_aligned ${al} vs frozen ${fal}: the expression is hardly transferred`);
    }
    if (r.model.misses > 0)
      out.push(`${tag}: no face found in ${r.model.misses} of ${r.frames} output frames (misses)`);
    const mp = r.model.pose_deg;
    const fp = r.frozen.pose_deg;
    if (mp !== null && fp !== null && mp > fp) {
      const ax = r.model.pose_axes_deg;
      const fx = r.frozen.pose_axes_deg;
      out.push(
        `${tag}: pose error ${mp} deg above frozen ${fp} deg (yaw/pitch/roll ${ax.yaw}/${ax.pitch}/${ax.roll} vs ${fx.yaw}/${fx.pitch}/${fx.roll}): the head turns the wrong way or too far`,
      );
    } else if (mp !== null && fp !== null && fp >= 2 && mp > 0.85 * fp) {
      out.push(
        `${tag}: pose error ${mp} deg is close to frozen ${fp} deg: the head rotation of the driver is hardly transferred`,
      );
    }
    // The region whose error shrinks least against frozen: where the engine follows the driver worst.
    const ratios = Object.entries(r.model.akd_regions)
      .map(
        ([k, v]) =>
          [
            k,
            v !== null && (r.frozen.akd_regions[k as keyof Scores['akd_regions']] ?? 0) > 0
              ? v / r.frozen.akd_regions[k as keyof Scores['akd_regions']]!
              : null,
          ] as const,
      )
      .filter((e): e is readonly [string, number] => e[1] !== null)
      .sort((a, b) => b[1] - a[1]);
    const worst = ratios[0];
    if (worst && worst[1] > 0.6)
      out.push(`${tag}: weakest region ${worst[0]} (akd ratio ${worst[1].toFixed(2)} vs frozen)`);
    // Independent-model findings.
    const m = r.model;
    const z = r.frozen;
    if (m.mouth_l1 !== null && z.mouth_l1 !== null && m.mouth_l1 > 0.9 * z.mouth_l1) {
      out.push(
        `${tag}: mouth_l1 ${m.mouth_l1} vs frozen ${z.mouth_l1}: the rendered mouth is hardly closer to the truth than a still mouth (drawn interior, teeth, tongue)`,
      );
    }
    if (m.eyes_l1 !== null && z.eyes_l1 !== null && m.eyes_l1 > 0.9 * z.eyes_l1) {
      out.push(
        `${tag}: eyes_l1 ${m.eyes_l1} vs frozen ${z.eyes_l1}: the eye regions are hardly closer to the truth than still eyes`,
      );
    }
    if (r.mode === 'cross' && m.id_sim !== null && z.id_sim !== null && m.id_sim < z.id_sim - 0.1) {
      out.push(
        `${tag}: id_sim to the portrait ${m.id_sim} vs frozen ${z.id_sim}: the avatar drifts away from the portrait's identity`,
      );
    }
    if (r.mode === 'cross' && m.id_sim_driver !== null && m.id_sim !== null && m.id_sim_driver > m.id_sim) {
      out.push(
        `${tag}: the output looks more like the driver (id_sim ${m.id_sim_driver}) than like the portrait (${m.id_sim}): identity leakage`,
      );
    }
    if (m.blink_corr !== null && m.blink_corr < 0.3)
      out.push(`${tag}: blink_corr ${m.blink_corr}: the eyes do not open and close with the driver's`);
    if (m.blink_corr === null && m.mesh_misses < r.frames)
      out.push(`${tag}: blink_corr undefined: the output's eye openness never changes`);
    if (m.gaze_corr !== null && m.gaze_corr < 0.3)
      out.push(`${tag}: gaze_corr ${m.gaze_corr}: the irises do not follow the driver's gaze`);
    // The second landmark network (face-api 68 points): the same eye and mouth questions, asked of another net.
    if (m.blink_corr_68 !== null && m.blink_corr_68 < 0.3)
      out.push(
        `${tag}: blink_corr_68 ${m.blink_corr_68}: by the 68-point net, the eyes do not open and close with the driver's`,
      );
    if (m.mouth_open_corr !== null && m.mouth_open_corr < 0.5)
      out.push(`${tag}: mouth_open_corr ${m.mouth_open_corr}: the mouth does not open and close with the driver's`);
    if (m.mouth_open_corr_68 !== null && m.mouth_open_corr_68 < 0.5)
      out.push(
        `${tag}: mouth_open_corr_68 ${m.mouth_open_corr_68}: by the 68-point net, the mouth does not open and close with the driver's`,
      );
    for (const [a, b, what] of [
      [m.blink_corr, m.blink_corr_68, 'blinks'],
      [m.mouth_open_corr, m.mouth_open_corr_68, 'mouth opening'],
    ] as const) {
      if (a !== null && b !== null && Math.abs(a - b) > 0.3) {
        out.push(
          `${tag}: FaceMesh and the 68-point net disagree on ${what} (${a} vs ${b}): read that score with care (the engine tracks with FaceMesh itself)`,
        );
      }
    }
    if (m.mesh_misses > 0)
      out.push(`${tag}: the independent face model found no face in ${m.mesh_misses} of ${r.frames} output frames`);
  }
  return out;
}

/** The flags (see the header). */
export const OPTIONS = {
  engine: str('default'),
  steps: str('0'),
  maxFrames: str('150'),
  clips: str(undefined),
  cross: str(undefined),
  crossClips: str(undefined),
  size: str('512'),
  idEvery: str('5'),
  noSheets: flag(),
  teacher: flag(),
  name: str('quality'),
  drivingDir: str(undefined),
  portraitDir: str(undefined),
};

export async function main(argv: string[]): Promise<void> {
  const values = parseOptions('quality', argv, OPTIONS);
  const maxFrames = Number(values.maxFrames) || undefined;
  const size = Number(values.size);
  const config = loadConfig(process.env);
  setLogLevel('warn');
  const drivingDir = path.resolve(values.drivingDir ?? path.join(media, 'driving'));
  const portraitDir = path.resolve(values.portraitDir ?? path.join(media, 'portraits'));
  for (const [flag, dir] of [
    ['--driving-dir', drivingDir],
    ['--portrait-dir', portraitDir],
  ] as const) {
    if (!existsSync(dir)) throw new Error(`${flag}: no such folder: ${dir}`);
  }
  const allClips = readdirSync(drivingDir)
    .filter((f) => f.endsWith('.mp4'))
    .sort();
  const clips = values.clips ? values.clips.split(',').map((c) => (c.endsWith('.mp4') ? c : `${c}.mp4`)) : allClips;
  const crossPortraits =
    values.cross === 'none' ? [] : values.cross ? values.cross.split(',') : DEFAULT_CROSS_PORTRAITS;
  const crossClips = values.crossClips
    ? values.crossClips.split(',').map((c) => (c.endsWith('.mp4') ? c : `${c}.mp4`))
    : DEFAULT_CROSS_CLIPS;
  const engineName = values.engine;
  const steps = Number(values.steps);
  const idEvery = Number(values.idEvery);
  const resultsDir = path.resolve(here, 'results');
  const resultName = values.name;
  if (!/^[a-z0-9][a-z0-9._-]*$/i.test(resultName))
    throw new Error(`--name must be a plain file name (got "${resultName}")`);
  const sheetsDir = path.join(resultsDir, 'quality-sheets', resultName === 'quality' ? '' : resultName);
  if (!values.noSheets) mkdirSync(sheetsDir, { recursive: true });
  const faceModels = await FaceModelPool.create();
  // fpd (self runs): FaceRes as ONNX with its tapped activations.
  const facePerceptual = await FacePerceptual.load();

  const rows: ClipResult[] = [];
  const t0 = performance.now();
  const runOne = async (clip: string, portraitName: string | null): Promise<void> => {
    const driving = path.join(drivingDir, clip);
    const portraitPath = portraitName ? path.join(portraitDir, portraitName) : null;
    process.stderr.write(`quality: ${portraitName ? `cross ${portraitName} <-` : 'self'} ${clip}\n`);
    const sheetName = `${portraitName ? `cross-${path.parse(portraitName).name}-` : 'self-'}${path.parse(clip).name}.png`;
    const r = await evaluate({
      driving,
      portrait: portraitPath ? await loadPortrait(portraitPath) : 'first-frame',
      portraitLabel: portraitPath ?? `first frame of ${clip}`,
      engineName: values.teacher ? `${engineName} (teacher)` : engineName,
      steps,
      faceModels,
      facePerceptual,
      idEvery,
      ...(values.noSheets ? {} : { sheet: { file: path.join(sheetsDir, sheetName) } }),
      maxFrames,
      perFrame: false,
      createAnalyzer: () => FaceTracker.create(),
      createEngines: async (selfSize) => {
        const overrides = { outputSize: selfSize ?? size };
        return {
          model: await openEngine(engineName, config.avatar, {
            ...overrides,
            steps,
            ...(values.teacher ? { refinerNet: 'teacher' as const } : {}),
          }),
          frozen: await openEngine('portrait', config.avatar, { ...overrides, steps: 0 }),
        };
      },
    });
    rows.push({
      clip,
      mode: r.mode,
      portrait: r.portrait,
      frames: r.frames,
      rendered: r.rendered,
      truth_misses: r.truth_misses,
      model: r.model,
      frozen: r.frozen,
      goal: r.goal,
      output: r.output,
      render_ms: r.timing.render_ms,
      eval_s: r.timing.total_s,
      fold_frames: r.fold_frames,
      fold_fixed_frames: r.fold_fixed_frames,
      sheet: r.sheet ? path.relative(resultsDir, r.sheet.file) : null,
    });
    const m = r.model;
    const z = r.frozen;
    process.stderr.write(
      `  model/frozen: l1 ${m.l1}/${z.l1} mouth_l1 ${m.mouth_l1}/${z.mouth_l1} fpd ${m.fpd}/${z.fpd} sharpness ${m.sharpness}/${z.sharpness} id_sim ${m.id_sim}/${z.id_sim} akd_mesh ${m.akd_mesh}/${z.akd_mesh} aed_mesh ${m.aed_mesh}/${z.aed_mesh} blink ${m.blink_corr} blink_68 ${m.blink_corr_68} mouth_open ${m.mouth_open_corr} mouth_open_68 ${m.mouth_open_corr_68} aed_mouth_68 ${m.aed_mouth_68}/${z.aed_mouth_68} | ${r.timing.total_s} s\n`,
    );
  };
  let faceModelStats: FaceModelPool['stats'];
  let fpdStats: FacePerceptual['stats'];
  try {
    for (const clip of clips) await runOne(clip, null);
    for (const p of crossPortraits) for (const clip of crossClips) await runOne(clip, p);
  } finally {
    faceModelStats = faceModels.stats;
    fpdStats = facePerceptual.stats;
    await faceModels.close();
    facePerceptual.close();
  }

  const self = rows.filter((r) => r.mode === 'self');
  const crossRows = rows.filter((r) => r.mode === 'cross');
  writeResult(resultName, {
    command: `npm run bench -- quality ${argv.join(' ')}`.trim(),
    engine: engineName,
    steps,
    // Which refiner measured it (steps > 0): the pack's folder and its student's sha256 from the manifest.
    refiner_pack: steps > 0 ? refinerPackId(config.avatar.refinerPack) : null,
    driving_dir: path.relative(path.resolve(here, '..'), drivingDir),
    portrait_dir: path.relative(path.resolve(here, '..'), portraitDir),
    max_frames_per_clip: maxFrames ?? 'all',
    id_every: idEvery,
    face_models:
      'see server/quality/faceModels.ts (independent of the engine: MediaPipe FaceMesh with iris, HSE FaceRes descriptors, and a second landmark network, face-api 68 points, on the FaceMesh face box)',
    // Worker time per analysed image over the whole run (two images per scored frame), and of that the 68-point net's.
    face_models_ms_per_image: Math.round(faceModelStats.meanMs * 10) / 10,
    landmarks68_ms_per_image: Math.round(faceModelStats.meanMs68 * 10) / 10,
    // The fpd network's time per crop (three crops per sampled self frame: truth, model, frozen).
    fpd_ms_per_image: fpdStats.runs ? Math.round(fpdStats.meanMs * 10) / 10 : null,
    sheets: values.noSheets
      ? null
      : 'quality-sheets/*.png next to this file (git-ignored: frames of third-party media)',
    goals: 'akd(model) <= 0.6 x akd(frozen); ssim(model) > ssim(frozen) (self mode)',
    definitions: {
      about: 'server/quality/evaluate.ts; scores on FFHQ-aligned 256x256 crops from the true frame',
      ...EVAL_DEFINITIONS,
    },
    summary: { self: aggregate(self), ...(crossRows.length ? { cross: aggregate(crossRows) } : {}) },
    render_ms_per_clip_mean: summarize(rows.map((r) => r.render_ms.mean)),
    fold_frames: rows.reduce((s, r) => s + r.fold_frames, 0),
    fold_fixed_frames: rows.reduce((s, r) => s + r.fold_fixed_frames, 0),
    total_s: Math.round((performance.now() - t0) / 100) / 10,
    findings: findings(rows),
    clips: rows,
  });
}

/** The refiner pack a run used: its folder and the sha256 of its student (refiner.onnx) from its manifest. */
function refinerPackId(dir: string | null): { dir: string; refiner_sha256: string | null } | null {
  if (!dir) return null;
  const manifest = path.join(dir, 'manifest.json');
  if (!existsSync(manifest)) return { dir, refiner_sha256: null };
  const m = JSON.parse(readFileSync(manifest, 'utf8')) as { files?: { role?: string; sha256?: string }[] };
  return { dir, refiner_sha256: m.files?.find((f) => f.role === 'refiner')?.sha256 ?? null };
}
