/**
 * `avatar eval --driving D.mp4 (--self | --portrait P) --json OUT.json [--sheet OUT.png] [--engine NAME] [--steps K]
 *   [--max-frames N] [--size PX] [--model-pack DIR] [--summary-only] [--verbose]`
 *
 * Quality scores of an engine on a clip, each beside the frozen baseline's (the unchanged portrait): see
 * server/quality/evaluate.ts for the definitions. With --self the clip's first frame is the portrait and the other
 * frames are both the driving input and the truth. The JSON is written under a temporary name and renamed.
 */
import { rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { loadConfig } from '../config.js';
import { setLogLevel } from '../logger.js';
import {
  InterruptGuard,
  explainPrepareError,
  loadPortrait,
  nonNegativeInt,
  offlineEngineNames,
  openEngine,
  parseCommandLine,
  positiveInt,
  requireFile,
  requireOutputDir,
  UsageError,
} from '../quality/cli.js';
import { evaluate, type EvalReport } from '../quality/evaluate.js';
import { FaceModelPool } from '../quality/faceModels.js';
import { FacePerceptual } from '../quality/facePerceptual.js';
import { probeVideo } from '../util/video.js';
import { FaceTracker } from '../vision/tracker.js';

const usage = `usage: avatar eval --driving CLIP.mp4 (--self | --portrait IMAGE) --json OUT.json [options]

  --driving CLIP      the driving video
  --self              self-reenactment: the clip's first frame is the portrait, later frames are the truth
  --portrait IMAGE    cross-reenactment: animate this picture with the clip (motion scores only)
  --json OUT.json     where to write the scores (model and frozen baseline side by side)
  --sheet OUT.png     also write a contact sheet: rows driver | frozen | output with each row's scores
  --sheet-every N     one sheet row every N scored frames (default: about 8 rows)
  --engine NAME       ${offlineEngineNames().join(' | ')} (default: the config's, 'default')
  --steps K           refiner steps for the engine (default: the config's, 0 = warp only); recorded in the JSON
  --teacher           sample the steps with the refiner's teacher network instead of the distilled student
  --id-every N        face descriptors (id_sim) and fpd on every N-th scored frame (default 5; 1 = every frame)
  --face-workers N    worker threads for the independent face models (default: one per core, at most 4)
  --start-frame S     skip the first S frames of the clip (in --self mode frame S is the portrait)
  --max-frames N      use at most N frames of the clip (in --self mode the first one is the portrait)
  --size PX           long side of the output in cross mode (default: the config's avatar.outputSize);
                      --self always renders at the clip's size
  --model-pack DIR    model pack folder (default: the config's)
  --summary-only      leave the per-frame scores out of the JSON
  --verbose           show the engine's and tracker's log lines
`;

function fail(message: string, code = 2): number {
  process.stderr.write(`avatar eval: ${message}\n${code === 2 ? `\n${usage}` : ''}`);
  return code;
}

/** One line per method for the terminal. */
export function formatSummary(r: EvalReport): string {
  const f = (v: number | null, d = 4): string => (v === null ? '   -  ' : v.toFixed(d));
  const row = (name: string, s: EvalReport['model']): string =>
    [
      `  ${name.padEnd(7)} l1 ${f(s.l1)}  ssim ${f(s.ssim)}  psnr ${f(s.psnr, 2)}  akd ${f(s.akd)}  pose ${f(s.pose_deg, 2)} deg  misses ${s.misses}`,
      `  ${''.padEnd(7)} fpd ${f(s.fpd)}  sharpness ${f(s.sharpness, 3)} (eyes ${f(s.sharpness_eyes, 3)}, mouth ${f(s.sharpness_mouth, 3)})`,
      `  ${''.padEnd(7)} mouth_l1 ${f(s.mouth_l1)}  eyes_l1 ${f(s.eyes_l1)}  id_sim ${f(s.id_sim, 3)}  akd_mesh ${f(s.akd_mesh)}  aed_mesh ${f(s.aed_mesh)}  blink_corr ${f(s.blink_corr, 2)}  gaze_corr ${f(s.gaze_corr, 2)}  mesh_misses ${s.mesh_misses}`,
      `  ${''.padEnd(7)} second network (68 points): blink_corr_68 ${f(s.blink_corr_68, 2)}  mouth_open_corr_68 ${f(s.mouth_open_corr_68, 2)}  aed_mouth_68 ${f(s.aed_mouth_68)}  | FaceMesh: mouth_open_corr ${f(s.mouth_open_corr, 2)}  aed_mouth_mesh ${f(s.aed_mouth_mesh)}`,
    ].join('\n');
  const regions = (Object.keys(r.model.akd_regions) as (keyof EvalReport['model']['akd_regions'])[])
    .map((k) => `${k} ${f(r.model.akd_regions[k], 3)}/${f(r.frozen.akd_regions[k], 3)}`)
    .join('  ');
  return [
    `eval ${r.mode} | engine ${r.engine} | steps ${r.steps} | ${r.frames} frames scored of ${r.rendered} rendered (${r.truth_misses} without a face in the ${r.mode === 'self' ? 'truth' : 'driver'})`,
    row('model', r.model),
    row('frozen', r.frozen),
    ...(r.mode === 'cross'
      ? [
          `  id_sim to the driver (leakage, lower is better): model ${f(r.model.id_sim_driver, 3)}, frozen ${f(r.frozen.id_sim_driver, 3)}`,
        ]
      : []),
    `  akd by region, model/frozen: ${regions}`,
    `  goal: akd ratio ${f(r.goal.akd_ratio, 3)} (<= 0.6: ${r.goal.akd_met ?? '-'}), ssim above frozen: ${r.goal.ssim_met ?? '-'}`,
    `  ${r.timing.total_s} s (${r.timing.eval_fps} frames/s; face models ${r.timing.face_models_ms_per_image ?? '-'} ms per image${r.timing.fpd_ms_per_image !== null ? `, fpd ${r.timing.fpd_ms_per_image} ms per crop` : ''})`,
  ].join('\n');
}

export async function run(argv: string[]): Promise<number> {
  let args;
  let maxFrames: number | undefined;
  let startFrame: number | undefined;
  let size: number | undefined;
  let steps = 0;
  let idEvery: number | undefined;
  let sheetEvery: number | undefined;
  let faceWorkers: number | undefined;
  try {
    args = parseCommandLine(argv, {
      driving: { type: 'string' },
      portrait: { type: 'string' },
      self: { type: 'boolean' },
      json: { type: 'string' },
      sheet: { type: 'string' },
      'sheet-every': { type: 'string' },
      engine: { type: 'string' },
      steps: { type: 'string' },
      teacher: { type: 'boolean' },
      'id-every': { type: 'string' },
      'face-workers': { type: 'string' },
      'start-frame': { type: 'string' },
      'max-frames': { type: 'string' },
      size: { type: 'string' },
      'model-pack': { type: 'string' },
      'summary-only': { type: 'boolean' },
      verbose: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    });
    if (args.help) {
      process.stderr.write(usage);
      return 0;
    }
    if (!args.driving) throw new UsageError('--driving is required');
    if (!args.json) throw new UsageError('--json is required');
    if (args.self && args.portrait) throw new UsageError('give either --self or --portrait, not both');
    if (!args.self && !args.portrait)
      throw new UsageError("give --portrait IMAGE, or --self to use the clip's first frame");
    maxFrames = positiveInt(args['max-frames'], 'max-frames');
    startFrame = nonNegativeInt(args['start-frame'], 'start-frame');
    size = positiveInt(args.size, 'size');
    steps = nonNegativeInt(args.steps, 'steps') ?? -1;
    idEvery = positiveInt(args['id-every'], 'id-every');
    sheetEvery = positiveInt(args['sheet-every'], 'sheet-every');
    faceWorkers = positiveInt(args['face-workers'], 'face-workers');
    if (sheetEvery !== undefined && !args.sheet) throw new UsageError('--sheet-every needs --sheet OUT.png');
    if (args.sheet && !/\.png$/i.test(args.sheet)) throw new UsageError('--sheet must name a .png file');
    if (size !== undefined && size % 2) throw new UsageError('--size must be even');
    if (args.self && maxFrames !== undefined && maxFrames < 2)
      throw new UsageError('--self needs --max-frames of at least 2');
  } catch (err) {
    if (err instanceof UsageError) return fail(err.message);
    throw err;
  }

  // The CLI is a program entry point: it may read the environment through the config module.
  const config = loadConfig(process.env);
  setLogLevel(args.verbose ? 'debug' : 'warn');
  const engineName = args.engine ?? config.avatar.engine;
  // --steps defaults to the config's (AVATAR_STEPS, 0 = warp only) for the default engine, 0 for the others.
  if (steps < 0) steps = engineName === 'default' ? config.avatar.steps : 0;
  if (!offlineEngineNames().includes(engineName))
    return fail(`unknown engine "${engineName}" (known: ${offlineEngineNames().join(', ')})`);
  const jsonOut = await requireOutputDir(args.json, 'JSON report');
  const sheetOut = args.sheet ? await requireOutputDir(args.sheet, 'contact sheet') : undefined;
  const driving = await requireFile(args.driving, 'driving clip');
  await probeVideo(driving); // clear errors (no video stream) before any work
  const portrait = args.self ? 'first-frame' : await loadPortrait(args.portrait!);
  const portraitLabel = args.self ? `first frame of ${args.driving}` : args.portrait!;
  const modelPack = args['model-pack'] ? path.resolve(args['model-pack']) : undefined;

  const guard = new InterruptGuard();
  let report: EvalReport;
  let faceModels: FaceModelPool | null = null;
  let facePerceptual: FacePerceptual | null = null;
  try {
    faceModels = await FaceModelPool.create(faceWorkers !== undefined ? { workers: faceWorkers } : {});
    // fpd is a self-mode score: cross mode has no truth to compare with.
    if (args.self) facePerceptual = await FacePerceptual.load();
    report = await evaluate({
      driving,
      portrait,
      portraitLabel,
      engineName: args.teacher ? `${engineName} (teacher)` : engineName,
      steps,
      faceModels,
      facePerceptual,
      idEvery,
      ...(sheetOut ? { sheet: { file: sheetOut, every: sheetEvery } } : {}),
      startFrame,
      maxFrames,
      perFrame: !args['summary-only'],
      progress: process.stderr,
      shouldStop: () => guard.interrupted,
      createAnalyzer: () => FaceTracker.create(),
      createEngines: async (selfSize) => {
        const outputSize = selfSize ?? size ?? config.avatar.outputSize;
        const overrides = { outputSize, ...(modelPack ? { modelPack } : {}) };
        const model = await openEngine(engineName, config.avatar, {
          ...overrides,
          steps,
          ...(args.teacher ? { refinerNet: 'teacher' as const } : {}),
        });
        const frozen = await openEngine('portrait', config.avatar, { ...overrides, steps: 0 });
        return { model, frozen };
      },
    });
  } catch (err) {
    throw explainPrepareError(err, portraitLabel);
  } finally {
    guard.close();
    await faceModels?.close();
    facePerceptual?.close();
  }
  if (report.stopped) {
    process.stderr.write('avatar eval: interrupted; no report written\n');
    return 130;
  }
  const tmp = path.join(path.dirname(jsonOut), `.${path.basename(jsonOut)}.partial-${process.pid}`);
  try {
    await writeFile(tmp, JSON.stringify(report, null, 2) + '\n');
    await rename(tmp, jsonOut);
  } finally {
    await rm(tmp, { force: true });
  }
  process.stderr.write(`${formatSummary(report)}\nwrote ${args.json}${args.sheet ? ` and ${args.sheet}` : ''}\n`);
  return 0;
}
