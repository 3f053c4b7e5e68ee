/**
 * `npm run bench -- quality [--engine NAME] [--max-frames N] [--clips a,b] [--cross P1,P2] [--size PX]`
 *
 * Runs the offline evaluation (server/quality/evaluate.ts, the same code as `avatar eval`) on every shared driving
 * clip in self-reenactment mode, optionally also cross-reenactment of the given portraits with every clip, and
 * writes benchmarks/results/quality.json: per clip the model's and the frozen baseline's scores, whether the goals
 * hold (akd(model) <= 0.6 x akd(frozen), ssim(model) > ssim(frozen)), timings, and findings in words.
 * --max-frames defaults to 150 per clip (5 s at 30 fps) to keep a full run within minutes on 2 cores; 0 = all frames.
 */
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../server/config.js';
import { setLogLevel } from '../server/logger.js';
import { loadPortrait, openEngine } from '../server/quality/cli.js';
import { evaluate, type EvalReport, type Scores } from '../server/quality/evaluate.js';
import { FaceTracker } from '../server/vision/tracker.js';
import { summarize, writeResult } from './lib/stats.js';

const here = path.dirname(new URL(import.meta.url).pathname);
const media = path.resolve(here, '..', '..', 'shared', 'media');

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
}

function meanOf(values: (number | null)[]): number | null {
  const v = values.filter((x): x is number => x !== null);
  return v.length ? Number((v.reduce((a, b) => a + b, 0) / v.length).toFixed(6)) : null;
}

function aggregate(rows: ClipResult[]): Record<string, unknown> {
  const keys = ['l1', 'ssim', 'psnr', 'akd', 'akd_aligned', 'pose_deg'] as const;
  const side = (which: 'model' | 'frozen'): Record<string, number | null> =>
    Object.fromEntries(keys.map((k) => [k, meanOf(rows.map((r) => r[which][k]))]));
  const regions = (which: 'model' | 'frozen'): Record<string, number | null> =>
    Object.fromEntries(
      Object.keys(rows[0]?.model.akd_regions ?? {}).map((k) => [k, meanOf(rows.map((r) => r[which].akd_regions[k as keyof Scores['akd_regions']]))]),
    );
  const axes = (which: 'model' | 'frozen'): Record<string, number | null> =>
    Object.fromEntries((['yaw', 'pitch', 'roll'] as const).map((k) => [k, meanOf(rows.map((r) => r[which].pose_axes_deg[k]))]));
  const block = (which: 'model' | 'frozen'): Record<string, unknown> => ({
    ...side(which),
    misses: rows.reduce((a, r) => a + r[which].misses, 0),
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
      out.push(`${tag}: akd ${r.model.akd} vs frozen ${r.frozen.akd} (ratio ${r.goal.akd_ratio}, goal <= 0.6): the output's landmarks do not follow the driver closely enough`);
    }
    if (r.goal.ssim_met === false) out.push(`${tag}: ssim ${r.model.ssim} <= frozen ${r.frozen.ssim}: the rendered face crop is further from the truth than the still portrait`);
    const al = r.model.akd_aligned;
    const fal = r.frozen.akd_aligned;
    if (al !== null && r.model.akd !== null && r.model.akd > 0.1 && al < 0.3 * r.model.akd) {
      out.push(`${tag}: akd ${r.model.akd} but only ${al} after similarity alignment: the error is head placement (the driver moves across the frame or changes size), not expression`);
    }
    if (al !== null && fal !== null && fal > 0 && al > 0.9 * fal) {
      out.push(`${tag}: akd_aligned ${al} vs frozen ${fal}: the expression is hardly transferred`);
    }
    if (r.model.misses > 0) out.push(`${tag}: no face found in ${r.model.misses} of ${r.frames} output frames (misses)`);
    const mp = r.model.pose_deg;
    const fp = r.frozen.pose_deg;
    if (mp !== null && fp !== null && mp > fp) {
      const ax = r.model.pose_axes_deg;
      const fx = r.frozen.pose_axes_deg;
      out.push(
        `${tag}: pose error ${mp} deg above frozen ${fp} deg (yaw/pitch/roll ${ax.yaw}/${ax.pitch}/${ax.roll} vs ${fx.yaw}/${fx.pitch}/${fx.roll}): the head turns the wrong way or too far`,
      );
    } else if (mp !== null && fp !== null && fp >= 2 && mp > 0.85 * fp) {
      out.push(`${tag}: pose error ${mp} deg is close to frozen ${fp} deg: the head rotation of the driver is hardly transferred`);
    }
    // The region whose error shrinks least against frozen: where the engine follows the driver worst.
    const ratios = Object.entries(r.model.akd_regions)
      .map(([k, v]) => [k, v !== null && (r.frozen.akd_regions[k as keyof Scores['akd_regions']] ?? 0) > 0 ? v / r.frozen.akd_regions[k as keyof Scores['akd_regions']]! : null] as const)
      .filter((e): e is readonly [string, number] => e[1] !== null)
      .sort((a, b) => b[1] - a[1]);
    const worst = ratios[0];
    if (worst && worst[1] > 0.6) out.push(`${tag}: weakest region ${worst[0]} (akd ratio ${worst[1].toFixed(2)} vs frozen)`);
  }
  return out;
}

export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      engine: { type: 'string', default: 'default' },
      'max-frames': { type: 'string', default: '150' },
      clips: { type: 'string' },
      cross: { type: 'string' },
      size: { type: 'string', default: '512' },
    },
    strict: true,
  });
  const maxFrames = Number(values['max-frames']) || undefined;
  const size = Number(values.size);
  const config = loadConfig(process.env);
  setLogLevel('warn');
  const allClips = readdirSync(path.join(media, 'driving')).filter((f) => f.endsWith('.mp4')).sort();
  const clips = values.clips ? values.clips.split(',').map((c) => (c.endsWith('.mp4') ? c : `${c}.mp4`)) : allClips;
  const crossPortraits = values.cross ? values.cross.split(',') : [];
  const engineName = values.engine;

  const rows: ClipResult[] = [];
  const t0 = performance.now();
  const runOne = async (clip: string, portraitName: string | null): Promise<void> => {
    const driving = path.join(media, 'driving', clip);
    const portraitPath = portraitName ? path.join(media, 'portraits', portraitName) : null;
    process.stderr.write(`quality: ${portraitName ? `cross ${portraitName} <-` : 'self'} ${clip}\n`);
    const r = await evaluate({
      driving,
      portrait: portraitPath ? await loadPortrait(portraitPath) : 'first-frame',
      portraitLabel: portraitPath ?? `first frame of ${clip}`,
      engineName,
      maxFrames,
      perFrame: false,
      createAnalyzer: () => FaceTracker.create(),
      createEngines: async (selfSize) => {
        const overrides = { outputSize: selfSize ?? size };
        return { model: await openEngine(engineName, config.avatar, overrides), frozen: await openEngine('portrait', config.avatar, overrides) };
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
    });
    process.stderr.write(
      `  model akd ${r.model.akd} ssim ${r.model.ssim} | frozen akd ${r.frozen.akd} ssim ${r.frozen.ssim} | ratio ${r.goal.akd_ratio} | ${r.timing.total_s} s\n`,
    );
  };
  for (const clip of clips) await runOne(clip, null);
  for (const p of crossPortraits) for (const clip of clips) await runOne(clip, p);

  const self = rows.filter((r) => r.mode === 'self');
  const crossRows = rows.filter((r) => r.mode === 'cross');
  writeResult('quality', {
    command: `npm run bench -- quality ${argv.join(' ')}`.trim(),
    engine: engineName,
    max_frames_per_clip: maxFrames ?? 'all',
    goals: 'akd(model) <= 0.6 x akd(frozen); ssim(model) > ssim(frozen) (self mode)',
    definitions: 'see server/quality/evaluate.ts; scores on FFHQ-aligned 256x256 crops from the true frame',
    summary: { self: aggregate(self), ...(crossRows.length ? { cross: aggregate(crossRows) } : {}) },
    render_ms_per_clip_mean: summarize(rows.map((r) => r.render_ms.mean)),
    total_s: Math.round((performance.now() - t0) / 100) / 10,
    findings: findings(rows),
    clips: rows,
  });
}
