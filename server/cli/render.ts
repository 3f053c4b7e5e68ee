/**
 * `avatar render --portrait P --driving D.mp4 --out O.mp4 [--engine NAME] [--max-frames N] [--size PX]
 *   [--model-pack DIR] [--verbose]`
 *
 * The offline mode: drives the portrait with a recorded clip, in this process, frame by frame, and writes an H.264
 * .mp4 with the clip's audio (when it has one). The file is written under a temporary name next to the output and
 * renamed when complete, so an interrupted or failed run never leaves a half-written file under the final name.
 *
 * Provenance (server/provenance): every frame carries the visible mark and the watermark (config.provenance; one
 * payload for the whole file: the render id's hash and the start minute), and the finished video gets a signed sidecar
 * manifest `<out>.provenance.json` (the server's Ed25519 key from the data dir); `avatar verify OUT` checks both.
 */
import { rename, rm } from 'node:fs/promises';
import path from 'node:path';
import type { AvatarEngine } from '../avatar/engineTypes.js';
import { loadConfig } from '../config.js';
import { setLogLevel } from '../logger.js';
import {
  explainPrepareError,
  InterruptGuard,
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
import { runOffline } from '../quality/offline.js';
import { Progress } from '../quality/progress.js';
import { RenderProvenance } from '../provenance/render.js';
import { PORTRAIT_ID_RE } from '../signaling/validate.js';
import { i420ToRgb } from '../util/image.js';
import { probeVideo, VideoWriter } from '../util/video.js';

const usage = `usage: avatar render --portrait IMAGE --driving CLIP.mp4 --out OUT.mp4 [options]

  --portrait IMAGE    the picture to animate (JPEG, PNG, WebP)
  --portrait-id ID    instead of --portrait: a portrait of this server's store (data dir); the provenance
                      manifest then names its id and consent record
  --driving CLIP      the driving video (its audio is copied into the output)
  --out OUT.mp4       the output video (H.264 + the clip's audio)
  --engine NAME       ${offlineEngineNames().join(' | ')} (default: the config's, 'default')
  --start-frame S     skip the first S frames of the clip
  --max-frames N      render at most N frames
  --size PX           long side of the output (even; default: the config's avatar.outputSize)
  --model-pack DIR    model pack folder (default: the config's)
  --verbose           show the engine's log lines
`;

/** Temporary output name in the same folder (same extension, so ffmpeg picks the same container). */
export function partialName(out: string): string {
  const ext = path.extname(out) || '.mp4';
  return path.join(path.dirname(out), `.${path.basename(out, ext)}.partial-${process.pid}${ext}`);
}

export async function run(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseCommandLine(argv, {
      portrait: { type: 'string' },
      'portrait-id': { type: 'string' },
      driving: { type: 'string' },
      out: { type: 'string' },
      engine: { type: 'string' },
      'start-frame': { type: 'string' },
      'max-frames': { type: 'string' },
      size: { type: 'string' },
      'model-pack': { type: 'string' },
      verbose: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    });
    if (args.help) {
      process.stderr.write(usage);
      return 0;
    }
    if (args['portrait-id'] !== undefined) {
      if (args.portrait) throw new UsageError('--portrait and --portrait-id exclude each other');
      if (!PORTRAIT_ID_RE.test(args['portrait-id']))
        throw new UsageError('--portrait-id must be a portrait id (32 hex digits)');
    }
    for (const k of ['driving', 'out'] as const) if (!args[k]) throw new UsageError(`--${k} is required`);
    if (!args.portrait && !args['portrait-id']) throw new UsageError('--portrait (or --portrait-id) is required');
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`avatar render: ${err.message}\n\n${usage}`);
    return 2;
  }
  const maxFrames = intOrUsage(positiveInt, args['max-frames'], 'max-frames');
  const startFrame = intOrUsage(nonNegativeInt, args['start-frame'], 'start-frame');
  const size = intOrUsage(positiveInt, args.size, 'size');
  if (maxFrames === null || startFrame === null || size === null) return 2;
  if (size !== undefined && size % 2) {
    process.stderr.write('avatar render: --size must be even\n');
    return 2;
  }

  // The CLI is a program entry point: it may read the environment through the config module.
  const config = loadConfig(process.env);
  // A stored portrait: its normalised copy, beside its record (which the provenance manifest reads for the consent).
  if (args['portrait-id']) args.portrait = path.join(config.dataDir, 'portraits', `${args['portrait-id']}.png`);
  setLogLevel(args.verbose ? 'debug' : 'warn');
  const out = await requireOutputDir(args.out!, 'output video');
  const driving = await requireFile(args.driving!, 'driving clip');
  const info = await probeVideo(driving);
  const portrait = await loadPortrait(args.portrait!);
  const engineName = args.engine ?? config.avatar.engine;
  let engine: AvatarEngine;
  try {
    engine = await openEngine(engineName, config.avatar, {
      ...(size !== undefined ? { outputSize: size } : {}),
      ...(args['model-pack'] ? { modelPack: path.resolve(args['model-pack']) } : {}),
    });
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`avatar render: ${err.message}\n`);
    return 2;
  }

  const modelPack = args['model-pack'] ? path.resolve(args['model-pack']) : config.avatar.modelPack;
  const provenance = await RenderProvenance.create({
    config,
    portraitFile: path.resolve(args.portrait!),
    engineName: engine.name,
    modelPack: engineName === 'default' ? modelPack : null,
    generator: 'live-avatar-server avatar render',
  }).catch((err: unknown) => {
    engine.close();
    throw err;
  });
  const tmp = partialName(out);
  const guard = new InterruptGuard();
  let writer: VideoWriter | undefined;
  let progress: Progress | undefined;
  let renamed = false;
  try {
    const result = await runOffline({
      engine,
      driving,
      portrait,
      startFrame,
      maxFrames,
      shouldStop: () => guard.interrupted,
      onPrepared: async ({ prepared, frames }) => {
        writer = await VideoWriter.open(tmp, {
          width: prepared.width,
          height: prepared.height,
          fps: info.fps,
          ...(info.hasAudio ? { audioFrom: driving } : {}),
        });
        progress = new Progress({ label: 'render', total: frames, stream: process.stderr });
      },
      onFrame: async (f) => {
        if (provenance.stamper.active) {
          provenance.stamper.stamp(f.outputI420);
          i420ToRgb(f.outputI420, f.output);
        }
        await writer!.write(f.output.data);
        progress!.tick();
      },
    }).catch((err: unknown) => {
      throw explainPrepareError(err, args.portrait!);
    });
    progress?.finish();
    if (result.stopped) {
      process.stderr.write('avatar render: interrupted; no output written\n');
      return 130;
    }
    if (result.frames === 0) throw new UsageError('the driving clip gave no frames to render');
    await writer!.close();
    await rename(tmp, out);
    renamed = true;
    const manifest = await provenance.sign(out);
    const sec = result.wallMs / 1000;
    process.stderr.write(
      `wrote ${args.out}: ${result.frames} frames, ${result.prepared.width}x${result.prepared.height}, ` +
        `${info.fps.toFixed(2)} fps, audio ${info.hasAudio ? 'copied' : 'none (the clip has none)'}, engine ${engine.name}, ` +
        `${sec.toFixed(1)} s (${(result.frames / sec).toFixed(1)} fps)\n` +
        `provenance: ${path.basename(manifest)} (signed), watermark ${provenance.stamper.watermarking ? provenance.stamper.payloadHex() : 'off'}\n`,
    );
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`avatar render: ${err.message}\n`);
      return 1;
    }
    throw explainPrepareError(err, args.portrait!);
  } finally {
    guard.close();
    engine.close();
    if (writer && !writer.closed) await writer.close().catch(() => undefined); // already failing: the cause is thrown above
    if (!renamed) await rm(tmp, { force: true });
  }
}

/** undefined when absent, null (after printing) when invalid. */
function intOrUsage(
  parse: (v: string | undefined, name: string) => number | undefined,
  value: string | undefined,
  name: string,
): number | undefined | null {
  try {
    return parse(value, name);
  } catch (err) {
    process.stderr.write(`avatar render: ${(err as Error).message}\n`);
    return null;
  }
}
