/**
 * The warp never folds: the fold check on synthetic grids (a fold one cell wide is found, the paste mask and the
 * lips' opening are respected), and the engine on a real clip and portrait whose head motion folds the warp at full
 * strength: every rendered frame is fold-free, the folding ones were taken back.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DefaultEngine, createDefaultVision } from '../../server/avatar/engines/default/index.js';
import { countFolds, nodeMask } from '../../server/avatar/engines/default/folds.js';
import { projectRoot } from '../../server/config.js';
import { defaultAvatarSettings } from '../../server/types/protocol.js';
import { createRgb, loadImageRgb } from '../../server/util/image.js';
import { readVideoFrames } from '../../server/util/video.js';
import { drivingClip, portraitFile } from '../../scripts/testData.js';

/** An identity sampling grid over [-1, 1]^2 (planar x then y). */
function identity(M: number): Float32Array {
  const g = new Float32Array(2 * M * M);
  for (let v = 0; v < M; v++)
    for (let u = 0; u < M; u++) {
      g[v * M + u] = -1 + (2 * u) / (M - 1);
      g[M * M + v * M + u] = -1 + (2 * v) / (M - 1);
    }
  return g;
}

describe('fold check', () => {
  it('finds no fold in an identity or a smooth warp, and finds a fold one cell wide', () => {
    const M = 32;
    const g = identity(M);
    expect(countFolds(g, M, null)).toBe(0);
    // A smooth swirl: no fold.
    const s = identity(M);
    for (let i = 0; i < M * M; i++) {
      const x = s[i]!,
        y = s[M * M + i]!;
      const a = 0.3 * Math.exp(-(x * x + y * y) * 2);
      s[i] = x * Math.cos(a) - y * Math.sin(a);
      s[M * M + i] = x * Math.sin(a) + y * Math.cos(a);
    }
    expect(countFolds(s, M, null)).toBe(0);
    // One node pushed past its right neighbour: the cells around it fold.
    const f = identity(M);
    const n = 10 * M + 10;
    f[n] = f[n + 2]!;
    expect(countFolds(f, M, null)).toBeGreaterThan(0);
    // ... unless the paste mask leaves those nodes out, or they are next to the lips' opening.
    const mask = new Uint8Array(M * M).fill(1);
    for (let v = 8; v <= 12; v++) for (let u = 8; u <= 12; u++) mask[v * M + u] = 0;
    expect(countFolds(f, M, mask)).toBe(0);
    const lips = new Float32Array(M * M);
    lips[10 * M + 11] = 1;
    expect(countFolds(f, M, null, lips)).toBe(0);
  });

  it('maps a paste mask onto the node grid', () => {
    const w = 40,
      h = 20,
      M = 5;
    const m = new Float32Array(w * h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w / 2; x++) m[y * w + x] = 1;
    const nm = nodeMask(m, w, h, M);
    // Node x positions 0, 9.75, 19.5, 29.25, 39 (rounded to 0, 10, 20, 29, 39); the mask covers x < 20.
    expect(Array.from(nm.subarray(0, M))).toEqual([1, 1, 0, 0, 0]);
  });
});

describe('the engine renders fold-free frames', () => {
  let engine: DefaultEngine;
  beforeAll(async () => {
    engine = await DefaultEngine.create({
      modelPack: path.join(projectRoot, 'models', 'default'),
      vision: await createDefaultVision('mesh'),
      refinerPack: null,
    });
  });
  afterAll(() => engine?.close());

  it('a talking, moving head at double strength: folding frames are taken back, none is rendered folded', async () => {
    const p = await engine.prepare(await loadImageRgb(portraitFile('painting_black_woman_afro.png')));
    engine.updateSettings({ ...defaultAvatarSettings, expressionStrength: 2 });
    const out = createRgb(p.width, p.height);
    let fixed = 0;
    let folded = 0;
    let i = 0;
    for await (const f of readVideoFrames(drivingClip('young_man_talking_outdoor.mp4'), {
      format: 'rgb24',
      maxFrames: 90,
    })) {
      const s = engine.renderRgb({ width: f.width, height: f.height, data: f.data }, out, (i++ * 1000) / 25);
      if (s.foldFixed) fixed++;
      if ((s.folds ?? 0) > 0) folded++;
      expect(s.folds).toBeDefined();
    }
    expect(fixed).toBeGreaterThan(0);
    expect(folded).toBe(0);
  });
});
