/**
 * The default engine inside the real avatar worker thread (AvatarSession): onnxruntime and the tracker load in the
 * worker, a real portrait is prepared, real driving frames go in through shared memory and animated frames come out.
 */
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AvatarSession, type SessionFrame } from '../../server/avatar/session.js';
import { createLogger } from '../../server/logger.js';
import { projectRoot } from '../../server/config.js';
import { loadImageRgb, rgbToI420 } from '../../server/util/image.js';
import { readVideoFrames } from '../../server/util/video.js';
import { drivingClip, portraitFile } from '../../scripts/testData.js';
import { waitFor } from '../helpers/wait.js';
import type { I420Frame } from '../../server/types/image.js';
import { defaultAvatarSettings } from '../../server/types/protocol.js';

let session: AvatarSession | null = null;

afterEach(async () => {
  await session?.close();
  session = null;
});

describe('default engine in the avatar worker', () => {
  it('prepares a portrait and animates it from driving frames', async () => {
    session = await AvatarSession.create({
      engine: 'default',
      engineOptions: {
        modelPack: path.join(projectRoot, 'models', 'default'),
        executionProvider: 'cpu',
        intraOpThreads: 1,
        outputSize: 512,
      },
      initTimeoutMs: 60_000,
      log: createLogger('test.engine.session'),
    });
    // No refiner pack given: the worker says so, and refiner steps asked for anyway run as 0 (no crash, no failure).
    expect(session.refiner).toEqual({ available: false, defaultSteps: 0, maxSteps: 0 });
    const failures: unknown[] = [];
    session.on('failure', (e: unknown) => failures.push(e));
    session.updateSettings({ ...defaultAvatarSettings, steps: 2 });
    expect(session.steps).toBe(0);
    const prepared = await session.prepare(await loadImageRgb(portraitFile('real_japanese_woman.png')));
    expect(prepared).toEqual({ width: 512, height: 512, face: true });
    const driving: I420Frame[] = [];
    for await (const f of readVideoFrames(drivingClip('man_mouth_wide_open.mp4'), {
      format: 'rgb24',
      maxFrames: 140,
    })) {
      driving.push(rgbToI420({ width: f.width, height: f.height, data: f.data }));
    }
    const outs: Uint8Array[] = [];
    let faces = 0;
    session.on('frame', (f: SessionFrame) => {
      outs.push(f.frame.data.slice(0, f.frame.width * f.frame.height));
      if (f.stats.face) faces++;
    });
    // Paced pushes (the worker drops what it cannot render: latest frame wins).
    for (let i = 0; i < driving.length; i++) {
      session.pushFrame(driving[i]!);
      await waitFor(() => outs.length + session!.dropped >= i + 1, 10_000, 'a rendered or dropped frame');
    }
    expect(outs.length).toBeGreaterThan(20);
    expect([failures, session.restarts, session.steps]).toEqual([[], 0, 0]);
    expect(faces).toBeGreaterThan(outs.length * 0.9);
    // The first output (neutral) and the last (mouth wide open) differ: the face moved.
    const first = outs[0]!;
    const last = outs.at(-1)!;
    let diff = 0;
    for (let i = 0; i < first.length; i++) diff += Math.abs(first[i]! - last[i]!);
    expect(diff / first.length).toBeGreaterThan(0.5);
  }, 180_000);
});
