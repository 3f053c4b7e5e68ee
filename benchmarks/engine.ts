/**
 * `npm run bench -- engine [--portrait FILE] [--driving FILE] [--frames N] [--threads N] [--output-size N] [--steps K]
 *   [--refiner-pack DIR|none] [--tracker mesh|dlib] [--name RESULT]`
 *
 * --tracker picks the engine's face tracker (default mesh: FaceMesh + Iris); --name writes
 * benchmarks/results/RESULT.json instead of engine.json (e.g. a warp-only run beside the refiner's).
 *
 * With a refiner pack (models/refiner by default, when present) it also measures the learned refiner at k = 0, 1, 2
 * and 4 steps (the `refiner` block: total and refine-stage p50/p95 per k, and the cost of one step); the main numbers
 * are for --steps (default: the pack's default steps when there is a pack, else 0).
 *
 * The default engine's per-frame cost: driving frames (I420, as the live path receives them) through the full
 * engine (track, latent, generate, paste) at 512 px output. Reports p50/p95 per stage and in total, fps, and the CPU
 * time per frame (which excludes time spent waiting for a core, so it shows what contention from other processes
 * added to the wall times). Writes benchmarks/results/engine.json.
 */
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DefaultEngine, createDefaultVision } from '../server/avatar/engines/default/index.js';
import { projectRoot } from '../server/config.js';
import { setLogLevel } from '../server/logger.js';
import { createI420, loadImageRgb, rgbToI420 } from '../server/util/image.js';
import { readVideoFrames } from '../server/util/video.js';
import { mediaDir as media } from '../scripts/testData.js';
import { num, parseOptions, str } from './lib/args.js';
import { summarize, writeResult } from './lib/stats.js';
import type { I420Frame } from '../server/types/image.js';

/** The flags (see the header). */
export const OPTIONS = {
  frames: num(300),
  threads: num(1),
  outputSize: num(512),
  tracker: str('mesh', ['mesh', 'dlib']),
  name: str('engine'),
  portrait: str(path.join(media, 'portraits', 'real_woman_dark_hair.png')),
  driving: str(path.join(media, 'driving', 'woman_speech_head_motion.mp4')),
  refinerPack: str(path.join(projectRoot, 'models', 'refiner')),
  /** Default: the refiner's own default steps. */
  steps: num(undefined, { min: 0, integer: true }),
};

export async function main(args: string[]): Promise<void> {
  const opts = parseOptions('engine', args, OPTIONS);
  setLogLevel('warn');
  const {
    portrait: portraitFile,
    driving: drivingFile,
    frames: frameCount,
    threads,
    outputSize,
    refinerPack,
    tracker,
    name,
  } = opts;
  const hasRefiner = refinerPack !== 'none' && existsSync(path.join(refinerPack, 'manifest.json'));
  if (tracker !== 'mesh' && tracker !== 'dlib') throw new TypeError('--tracker must be mesh or dlib');
  const warmup = 20;

  const frames: I420Frame[] = [];
  for await (const f of readVideoFrames(drivingFile, { format: 'rgb24', maxFrames: Math.min(frameCount, 300) })) {
    frames.push(rgbToI420({ width: f.width, height: f.height, data: f.data }));
  }
  const engine = await DefaultEngine.create({
    modelPack: path.join(projectRoot, 'models', 'default'),
    intraOpThreads: threads,
    outputSize,
    vision: await createDefaultVision(tracker),
    refinerPack: hasRefiner ? refinerPack : null,
  });
  const steps = opts.steps ?? engine.refiner?.defaultSteps ?? 0;
  engine.setSteps(steps);
  try {
    const prepStart = performance.now();
    const prepared = await engine.prepare(await loadImageRgb(portraitFile));
    const prepareMs = performance.now() - prepStart;
    const out = createI420(prepared.width, prepared.height);
    const stages = {
      track: [] as number[],
      latent: [] as number[],
      generate: [] as number[],
      paste: [] as number[],
      refine: [] as number[],
    };
    const total: number[] = [];
    const cpu: number[] = [];
    let faces = 0;
    const load0 = os.loadavg()[0]!;
    for (let i = 0; i < warmup + frameCount; i++) {
      // Loop the clip (ping-pong) when more frames are asked for than it has: no jump cut for the tracker.
      const period = 2 * frames.length - 2;
      const k = i % period;
      const frame = frames[k < frames.length ? k : period - k]!;
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      const s = engine.render(frame, out, i * (1000 / 25));
      const t1 = performance.now();
      const c1 = process.cpuUsage(c0);
      if (i < warmup) continue;
      stages.track.push(s.trackMs);
      stages.latent.push(s.latentMs);
      stages.generate.push(s.generateMs);
      stages.paste.push(s.pasteMs);
      stages.refine.push(s.refineMs ?? 0);
      total.push(t1 - t0);
      cpu.push((c1.user + c1.system) / 1000);
      if (s.face) faces++;
    }
    const totalS = summarize(total);
    // The refiner at each k, on the same frames (shorter runs).
    let refiner: Record<string, unknown> | null = null;
    if (engine.refiner) {
      const perK: Record<string, { total: ReturnType<typeof summarize>; refine: ReturnType<typeof summarize> }> = {};
      const n = Math.min(frameCount, 150);
      for (const k of [0, 1, 2, 4]) {
        engine.setSteps(k);
        const tt: number[] = [];
        const rr: number[] = [];
        for (let i = 0; i < warmup + n; i++) {
          const frame = frames[i % frames.length]!;
          const t0 = performance.now();
          const st = engine.render(frame, out, (warmup + frameCount + i) * (1000 / 25));
          if (i >= warmup) {
            tt.push(performance.now() - t0);
            rr.push(st.refineMs ?? 0);
          }
        }
        perK[`k${k}`] = { total: summarize(tt), refine: summarize(rr) };
      }
      const r1 = perK.k1!.refine.p50;
      const r4 = perK.k4!.refine.p50;
      refiner = {
        pack: engine.refiner.pack,
        default_steps: engine.refiner.defaultSteps,
        frames_per_k: n,
        per_k: perK,
        step_ms_p50: Math.round(((r4 - r1) / 3) * 100) / 100,
        fixed_ms_p50: Math.round((r1 - (r4 - r1) / 3) * 100) / 100,
      };
      engine.setSteps(steps);
    }
    writeResult(name, {
      tracker,
      portrait: path.basename(portraitFile),
      driving: path.basename(drivingFile),
      input: `${frames[0]!.width}x${frames[0]!.height}`,
      output: `${prepared.width}x${prepared.height}`,
      paste_region: `${engine.prepared!.paste.w}x${engine.prepared!.paste.h}`,
      frames: frameCount,
      face_frames: faces,
      intra_op_threads: threads,
      steps,
      cpus: os.cpus().length,
      load_average_1m: { start: load0, end: os.loadavg()[0]! },
      prepare_ms: Math.round(prepareMs),
      p50_ms: totalS.p50,
      p95_ms: totalS.p95,
      fps: Math.round((1000 / totalS.mean) * 10) / 10,
      cpu_ms_per_frame: summarize(cpu),
      stages: {
        track: summarize(stages.track),
        latent: summarize(stages.latent),
        generate: summarize(stages.generate),
        paste: summarize(stages.paste),
        refine: summarize(stages.refine),
        total: totalS,
      },
      refiner,
      goal: { p95_ms: 40, fps: 25 },
    });
  } finally {
    engine.close();
  }
}
