/**
 * The trained refiner pack (models/refiner) in the default engine inside the real avatar worker thread: the worker
 * loads both packs, says a refiner is available, and renders the same driving frames with k = 0 (warp only) and
 * k = the pack's default; both give frames of the output size, and the refined frames differ from the warp where the
 * performer's mouth opens (the part the warp draws and the refiner was trained to repair). And, in process, what a
 * manifest's "residual": "features" does: the change stays around the eyes and the mouth.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AvatarSession, type SessionFrame } from '../../server/avatar/session.js';
import { projectRoot } from '../../server/config.js';
import { createLogger } from '../../server/logger.js';
import { defaultAvatarSettings } from '../../server/types/protocol.js';
import { createI420, loadImageRgb, rgbToI420 } from '../../server/util/image.js';
import { readVideoFrames } from '../../server/util/video.js';
import type { I420Frame } from '../../server/types/image.js';
import { drivingClip, portraitFile } from '../../scripts/testData.js';
import { waitFor } from '../helpers/wait.js';
import { createEngine } from '../../server/avatar/engines/index.js';
import type { DefaultEngine } from '../../server/avatar/engines/default/engine.js';

const refinerPack = path.join(projectRoot, 'models', 'refiner');

let sessions: AvatarSession[] = [];
afterEach(async () => {
  await Promise.all(sessions.map((s) => s.close()));
  sessions = [];
});

/** man_mouth_wide_open at 30 fps: closed until ~frame 61, wide open over ~70-92. */
const OPEN_FROM = 68;
const OPEN_TO = 92;

async function renderAll(steps: number, driving: I420Frame[]): Promise<Uint8Array[]> {
  const session = await AvatarSession.create({
    engine: 'default',
    engineOptions: {
      modelPack: path.join(projectRoot, 'models', 'default'),
      refinerPack,
      executionProvider: 'cpu',
      intraOpThreads: 1,
      outputSize: 512,
    },
    initTimeoutMs: 60_000,
    // Frames are pushed one at a time here: no overload lowering of the steps on a busy test machine.
    stepsPolicy: { budgetMs: 60_000 },
    log: createLogger('test.engine.refiner'),
  });
  sessions.push(session);
  const pack = JSON.parse(readFileSync(path.join(refinerPack, 'manifest.json'), 'utf8')) as { steps: number };
  expect(session.refiner).toEqual({ available: true, defaultSteps: pack.steps, maxSteps: 8 });
  session.updateSettings({ ...defaultAvatarSettings, steps });
  const prepared = await session.prepare(await loadImageRgb(portraitFile('real_older_man_glasses.jpg')));
  expect(prepared).toEqual({ width: 512, height: 512, face: true });
  const outs: Uint8Array[] = [];
  session.on('frame', (f: SessionFrame) => {
    expect([f.frame.width, f.frame.height]).toEqual([512, 512]);
    outs.push(f.frame.data.slice());
  });
  // One frame at a time, each rendered before the next (nothing dropped: both runs see the same sequence).
  for (let i = 0; i < driving.length; i++) {
    session.pushFrame(driving[i]!);
    await waitFor(() => outs.length >= i + 1 || session.dropped > 0, 20_000, 'a rendered frame');
  }
  expect(session.dropped).toBe(0);
  expect(session.steps).toBe(steps);
  return outs;
}

// The pack is committed (models/refiner): a missing pack fails these tests instead of skipping them.
describe('learned refiner in the avatar worker', () => {
  it('k = 0 and the default k give frames of the right size; the refined frames differ where the mouth opens', async () => {
    const driving: I420Frame[] = [];
    for await (const f of readVideoFrames(drivingClip('man_mouth_wide_open.mp4'), {
      format: 'rgb24',
      maxFrames: OPEN_TO,
    })) {
      driving.push(rgbToI420({ width: f.width, height: f.height, data: f.data }));
    }
    const pack = JSON.parse(readFileSync(path.join(refinerPack, 'manifest.json'), 'utf8')) as { steps: number };
    const warp = await renderAll(0, driving);
    const refined = await renderAll(pack.steps, driving);
    expect(refined.length).toBe(warp.length);
    const lumaDiff = (a: Uint8Array, b: Uint8Array): number => {
      let d = 0;
      for (let i = 0; i < 512 * 512; i++) d += Math.abs(a[i]! - b[i]!);
      return d / (512 * 512);
    };
    const mean = (xs: number[]): number => xs.reduce((s, x) => s + x, 0) / xs.length;
    const open = mean(warp.slice(OPEN_FROM, OPEN_TO).map((w, i) => lumaDiff(w, refined[OPEN_FROM + i]!)));
    process.stdout.write(`refiner worker: mean |k0 - k${pack.steps}| luma on open-mouth frames ${open.toFixed(3)}\n`);
    // The refiner changes the picture where the mouth is open (it repaints the drawn mouth interior).
    expect(open).toBeGreaterThan(0.2);
  }, 300_000);

  it('"residual": "features" keeps the change around the eyes and the mouth: far fewer pixels change than over the paste region', async () => {
    // The same pack twice, its manifest saying "paste" in one copy and "features" in the other (same ONNX files).
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'refiner-residual-'));
    try {
      const copy = (residual: 'paste' | 'features'): string => {
        const dir = path.join(tmp, residual);
        cpSync(refinerPack, dir, { recursive: true });
        const m = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as {
          files: { role: string; residual?: string }[];
        };
        for (const f of m.files) if (f.role === 'refiner') f.residual = residual;
        writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(m));
        return dir;
      };
      const frames: I420Frame[] = [];
      for await (const f of readVideoFrames(drivingClip('man_mouth_wide_open.mp4'), {
        format: 'rgb24',
        maxFrames: OPEN_TO,
      })) {
        frames.push(rgbToI420({ width: f.width, height: f.height, data: f.data }));
      }
      const changed = async (dir: string): Promise<number> => {
        const eng = (await createEngine(
          'default',
          {
            modelPack: path.join(projectRoot, 'models', 'default'),
            executionProvider: 'cpu',
            intraOpThreads: 1,
            outputSize: 256,
            refinerPack: dir,
            steps: 1,
          },
          createLogger('test.engine.refiner'),
        )) as DefaultEngine;
        try {
          const prepared = await eng.prepare(await loadImageRgb(portraitFile('real_older_man_glasses.jpg')));
          const k0 = createI420(prepared.width, prepared.height);
          const k1 = createI420(prepared.width, prepared.height);
          let n = 0;
          for (const [i, f] of frames.entries()) {
            eng.setSteps(0);
            eng.render(f, k0, i * 33);
            eng.setSteps(1);
            eng.render(f, k1, i * 33 + 1);
            if (i < OPEN_FROM) continue;
            for (let j = 0; j < prepared.width * prepared.height; j++) if (Math.abs(k0.data[j]! - k1.data[j]!) > 1) n++;
          }
          return n;
        } finally {
          eng.close();
        }
      };
      const paste = await changed(copy('paste'));
      const features = await changed(copy('features'));
      process.stdout.write(
        `refiner residual: luma pixels changed by k = 1 on the open-mouth frames: paste ${paste}, features ${features}\n`,
      );
      expect(features).toBeGreaterThan(0.05 * paste);
      expect(features).toBeLessThan(0.6 * paste);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }, 300_000);
});
