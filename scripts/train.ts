/**
 * `npm run train -- --data ../shared/train [options]`: trains the learned refiner pack from scratch, in one command.
 *
 * 1. Dataset (TypeScript, the project's own tracker and warp): every clip of DATA (its clips/ folder when there is
 *    one) becomes cached self-reenactment samples (server/learned/dataset.ts) in --cache, outside the repository.
 *    Cached clips are reused; a changed clip or format is rebuilt.
 * 2. Training (Debian's PyTorch, CPU; the models/tools/refiner package): the expression encoder and the InDI teacher
 *    jointly, then the few-step student distilled from the teacher. Checkpoints in --cache: a stopped run resumes.
 * 3. Export (same package): ONNX graphs + manifest.json with sha256, shapes and steps, and the scores of the held-out
 *    validation clips, into --out.
 *
 * Options: `npm run train -- --help` (USAGE below).
 *
 * On a machine without Node (a lent GPU), pack the cache (`python3 -m refiner.packed pack`, ~20x smaller) and run
 * `python3 -m refiner` there with --packed DIR --device cuda --save-weights OUT/weights.npz (both from models/tools, or
 * with it on PYTHONPATH); back here, `python3 -m refiner --from-weights OUT/weights.npz --cache CACHE --clips ... --out
 * models/refiner` validates on this machine and exports the pack (the model card names both machines).
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../server/config.js';
import { buildClip } from '../server/learned/dataset.js';
import { setLogLevel } from '../server/logger.js';
import { openEngine } from '../server/quality/cli.js';

const repoRoot = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');

/** Why a run is refused: a stable code for scripts and tests (the Python side's `refiner: error CODE: ...` alike). */
type FailCode = 'BAD_ARGUMENT' | 'NO_DATA' | 'CACHE_IN_REPO';

function fail(code: FailCode, msg: string): never {
  process.stderr.write(`train: error ${code}: ${msg}\n`);
  process.exit(2);
}

const USAGE = `usage: npm run train -- --data DIR [options]

  --data DIR             the training clips: .mp4, .mov, .mkv or .webm in DIR/clips when there is one, else in DIR
  --cache DIR            dataset cache and checkpoints, outside the repository (default ~/.cache/live-avatar/refiner)
  --out DIR              the pack to write (default models/refiner)
  --minutes M            teacher training time (default 40); --student-minutes M: student (default 10)
  --size R               crop side (default 128); --stride S: every S-th frame (default 2)
  --max-samples N        per clip (default 120); --clips N: the first N clips only (smoke runs)
  --dataset-only         build the dataset cache and stop
  --seed N, --fresh      seed (default 7); ignore checkpoints
  --python PATH          the Python with PyTorch (default /usr/bin/python3)
  --device cpu|cuda|auto (default cpu); --batch N, --lr X, --warmup STEPS
  --augment              flip and colour augmentation of the samples
  --channels A,B,C       the refiner's widths (default 48,96,128); --student-k 1,1,2,4: the k drawn per student batch
  --source aligned|region
                         the portrait picture the networks trained here read (aligned, the default, follows the
                         warp's target head each frame)
  --residual paste|features
                         where the engine keeps the student's change: the paste region (default), or around the eyes
                         and the mouth only (written into the manifest)
Fine-tuning instead of training from scratch:
  --finetune-from PACK   an exported pack (e.g. models/refiner): its student trained on the truth, encoder and teacher
                         frozen, for --finetune-minutes M (default 60; checkpoint in --cache, --fresh to start over)
  --roll DEG             head roll between portrait and driver, up to DEG, for half the samples; --scale F and
                         --shift F add a zoom and a shift of up to +-F to them; --wedges: black wedges over the
                         driving crop's edges
  --finetune-loss SPEC   the fine-tune's loss as TERM=WEIGHT pairs (default truth_l1=1); the face-network and
                         adversarial terms: id and perceptual (MobileFace), landmarks (FaceMesh's lids, lips,
                         brows), adv and fm (patch discriminators on the face, eyes and mouth, trained alongside
                         at --d-lr, default 2e-4), e.g.
                         truth_l1=1,id=0.1,perceptual=0.5,landmarks=1,adv=0.05,fm=1
  --val-max N            at most N validation samples per validation clip (a cheaper validation; 0: all)
  --log-every N          a progress line every N steps (default 100); --val-seconds S: the validation L1
                         (and, fine-tuning, a contact sheet in CACHE/checkpoints/sheets) every S seconds
The training itself is python3 -m refiner (models/tools/refiner; its own flags: PYTHONPATH=models/tools
/usr/bin/python3 -m refiner --help).
`;

function parseCommandLine(): ReturnType<typeof parseOptions> {
  try {
    return parseOptions();
  } catch (e) {
    fail('BAD_ARGUMENT', `${(e as Error).message} (npm run train -- --help)`);
  }
}

function parseOptions() {
  return parseArgs({
    args: process.argv.slice(2),
    options: {
      help: { type: 'boolean' },
      data: { type: 'string' },
      cache: { type: 'string', default: path.join(os.homedir(), '.cache', 'live-avatar', 'refiner') },
      out: { type: 'string', default: path.join(repoRoot, 'models', 'refiner') },
      minutes: { type: 'string', default: '40' },
      'student-minutes': { type: 'string', default: '10' },
      size: { type: 'string', default: '128' },
      stride: { type: 'string', default: '2' },
      'max-samples': { type: 'string', default: '120' },
      clips: { type: 'string' },
      seed: { type: 'string', default: '7' },
      fresh: { type: 'boolean' },
      'dataset-only': { type: 'boolean' },
      python: { type: 'string', default: '/usr/bin/python3' },
      device: { type: 'string', default: 'cpu' },
      batch: { type: 'string' },
      lr: { type: 'string' },
      warmup: { type: 'string' },
      augment: { type: 'boolean' },
      channels: { type: 'string' },
      'student-k': { type: 'string' },
      'finetune-from': { type: 'string' },
      'finetune-minutes': { type: 'string' },
      roll: { type: 'string' },
      wedges: { type: 'boolean' },
      scale: { type: 'string' },
      shift: { type: 'string' },
      source: { type: 'string' },
      residual: { type: 'string' },
      'finetune-loss': { type: 'string' },
      'd-lr': { type: 'string' },
      'val-max': { type: 'string' },
      'log-every': { type: 'string' },
      'val-seconds': { type: 'string' },
    },
    strict: true,
  });
}

const { values } = parseCommandLine();
if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
if (!values.data) fail('BAD_ARGUMENT', '--data DIR is required (e.g. --data ../shared/train)');
if (values.source !== undefined && values.source !== 'aligned' && values.source !== 'region')
  fail('BAD_ARGUMENT', `--source must be aligned or region, not ${values.source}`);
if (values.residual !== undefined && values.residual !== 'paste' && values.residual !== 'features')
  fail('BAD_ARGUMENT', `--residual must be paste or features, not ${values.residual}`);
const dataDir = path.resolve(values.data);
const clipDir = existsSync(path.join(dataDir, 'clips')) ? path.join(dataDir, 'clips') : dataDir;
if (!existsSync(clipDir)) fail('NO_DATA', `data folder not found: ${dataDir}`);
let clips = readdirSync(clipDir)
  .filter((f) => /\.(mp4|mov|mkv|webm)$/i.test(f))
  .sort()
  .map((f) => path.join(clipDir, f));
if (values.clips) clips = clips.slice(0, Number(values.clips));
if (!clips.length) fail('NO_DATA', `no clips (.mp4) in ${clipDir}`);
const size = Number(values.size);
const cache = path.resolve(values.cache);
if (cache.startsWith(repoRoot + path.sep))
  fail(
    'CACHE_IN_REPO',
    `--cache must be outside the repository (the samples are frames of third-party clips): ${cache}`,
  );

setLogLevel('warn');
const config = loadConfig(process.env);
const t0 = performance.now();
let samples = 0;
let used = 0;
for (const [i, clip] of clips.entries()) {
  const tc = performance.now();
  const meta = await buildClip(clip, cache, {
    size,
    stride: Number(values.stride),
    maxSamples: Number(values['max-samples']),
    // Warp only: the samples are what the refiner starts from.
    createEngine: (outputSize) => openEngine('default', config.avatar, { outputSize, steps: 0 }),
  });
  const s = meta.frames.length;
  samples += s;
  if (s) used++;
  process.stderr.write(
    `train: dataset ${i + 1}/${clips.length} ${path.basename(clip)}: ${s ? `${s} samples` : 'skipped (no face in its first frame)'} (${((performance.now() - tc) / 1000).toFixed(1)} s)\n`,
  );
}
process.stderr.write(
  `train: dataset ready: ${used} clips, ${samples} samples in ${cache} (${((performance.now() - t0) / 1000).toFixed(0)} s)\n`,
);
if (values['dataset-only']) process.exit(0);

const args = [
  '-m',
  'refiner',
  '--cache',
  cache,
  '--out',
  path.resolve(values.out),
  '--minutes',
  values.minutes,
  '--student-minutes',
  values['student-minutes'],
  '--seed',
  values.seed,
  '--clips',
  clips.map((c) => path.parse(c).name).join(','),
  '--device',
  values.device,
  ...(values.batch ? ['--batch', values.batch] : []),
  ...(values.lr ? ['--lr', values.lr] : []),
  ...(values.warmup ? ['--warmup', values.warmup] : []),
  ...(values.augment ? ['--augment'] : []),
  ...(values.channels ? ['--channels', values.channels] : []),
  ...(values['student-k'] ? ['--student-k', values['student-k']] : []),
  ...(values['finetune-from'] ? ['--finetune-from', path.resolve(values['finetune-from'])] : []),
  ...(values['finetune-minutes'] ? ['--finetune-minutes', values['finetune-minutes']] : []),
  ...(values.roll ? ['--roll', values.roll] : []),
  ...(values.wedges ? ['--wedges'] : []),
  ...(values.scale ? ['--scale', values.scale] : []),
  ...(values.shift ? ['--shift', values.shift] : []),
  ...(values.source ? ['--source', values.source] : []),
  ...(values.residual ? ['--residual', values.residual] : []),
  ...(values['finetune-loss'] ? ['--finetune-loss', values['finetune-loss']] : []),
  ...(values['d-lr'] ? ['--d-lr', values['d-lr']] : []),
  ...(values['val-max'] ? ['--val-max', values['val-max']] : []),
  ...(values['log-every'] ? ['--log-every', values['log-every']] : []),
  ...(values['val-seconds'] ? ['--val-seconds', values['val-seconds']] : []),
  ...(values.fresh ? ['--fresh'] : []),
];
// The training package lives in models/tools (python3 -m refiner, as tfjs_convert).
const tools = path.join(repoRoot, 'models', 'tools');
const pythonPath = process.env.PYTHONPATH ? `${tools}${path.delimiter}${process.env.PYTHONPATH}` : tools;
const child = spawn(values.python, args, { stdio: 'inherit', env: { ...process.env, PYTHONPATH: pythonPath } });
const code = await new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? 1)));
process.exit(code);
