/**
 * Train/run-time parity of the refiner's view (refinerCrop.ts, refiner.ts): the live engine converts only the paste
 * region of its I420 output to RGB and resamples it; the training samples converted the whole frame and resampled the
 * same region. Both must give the same pixels, or the refiner sees at run time what it never saw in training.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { regionToRgb } from '../../server/avatar/engines/default/refiner.js';
import {
  ALIGN_POINTS,
  CANVAS_SCALE,
  canvasRegion,
  featureMask,
  fitSourceAlignment,
  sampleAligned,
  sampleRegion,
} from '../../server/avatar/engines/default/refinerCrop.js';
import { repoRoot } from '../helpers/media.js';
import { i420ToRgb, loadImageRgb, resizeRgb, rgbToI420 } from '../../server/util/image.js';
import { portraitFile } from '../../scripts/testData.js';

describe('refiner crop', () => {
  it('the region of an I420 frame as RGB equals the same region of the whole frame converted', async () => {
    const img = resizeRgb(await loadImageRgb(portraitFile('real_woman_dark_hair.png')), 474, 474);
    const frame = rgbToI420(img);
    const whole = i420ToRgb(frame);
    const [x0, y0, w, h] = [100, 60, 260, 300];
    const region = { width: w, height: h, data: new Uint8Array(w * h * 3) };
    regionToRgb(frame, x0, y0, w, h, region);
    let maxDiff = 0;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        for (let c = 0; c < 3; c++) {
          maxDiff = Math.max(
            maxDiff,
            Math.abs(region.data[(y * w + x) * 3 + c]! - whole.data[((y0 + y) * whole.width + x0 + x) * 3 + c]!),
          );
        }
      }
    }
    expect(maxDiff).toBe(0);
    // Resampled to the refiner's size from the region grown by 2 px (as the engine does), the two ways agree exactly.
    const grown = { width: w + 4, height: h + 4, data: new Uint8Array((w + 4) * (h + 4) * 3) };
    regionToRgb(frame, x0 - 2, y0 - 2, w + 4, h + 4, grown);
    const a = sampleRegion(whole, { x0, y0, w, h }, 128, new Uint8Array(128 * 128 * 3));
    const b = sampleRegion(grown, { x0: 2, y0: 2, w, h }, 128, new Uint8Array(128 * 128 * 3));
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
    // Without the margin the border pixels would differ (edge clamping inside the region): the margin matters.
    const c = sampleRegion(region, { x0: 0, y0: 0, w, h }, 128, new Uint8Array(128 * 128 * 3));
    expect(Buffer.from(a).equals(Buffer.from(c))).toBe(false);
  });

  it('sampleRegion averages a downscaled region (a flat colour stays flat) and refuses a wrong buffer', () => {
    const flat = { width: 300, height: 200, data: new Uint8Array(300 * 200 * 3).fill(77) };
    const out = sampleRegion(flat, { x0: 10, y0: 20, w: 250, h: 150 }, 64, new Uint8Array(64 * 64 * 3));
    expect(out.every((v) => v === 77)).toBe(true);
    expect(() => sampleRegion(flat, { x0: 0, y0: 0, w: 10, h: 10 }, 64, new Uint8Array(10))).toThrow(TypeError);
  });

  it('the aligned source: the identity reads the region crop itself; the fit recovers a known head motion', async () => {
    const img = await loadImageRgb(portraitFile('real_woman_dark_hair.png'));
    const region = { x0: 180.5, y0: 120.25, w: 300, h: 300 };
    const R = 128;
    const C = CANVAS_SCALE * R;
    const canvas = sampleRegion(img, canvasRegion(region), C, new Uint8Array(C * C * 3));
    const crop = sampleRegion(img, region, R, new Uint8Array(R * R * 3));
    const ident = sampleAligned(canvas, R, [1, 0, 0, 0], new Float32Array(3 * R * R));
    let maxDiff = 0;
    for (let i = 0; i < R * R; i++)
      for (let c = 0; c < 3; c++) maxDiff = Math.max(maxDiff, Math.abs(ident[c * R * R + i]! * 255 - crop[3 * i + c]!));
    // The canvas's centre is the region crop, pixel for pixel.
    expect(maxDiff).toBeLessThan(1e-3);

    // Control points in grid units over a 200x200 paste region whose first/last pixel centres are at -0.8/0.8.
    const face = {
      ctrlSource: new Float64Array(2 * 96),
      paste: { w: 200, h: 200, grid: new Float32Array([-0.8, -0.8, 0.8, 0.8]) },
    };
    for (let i = 0; i < 96; i++) {
      face.ctrlSource[2 * i] = 0.5 * Math.cos(i * 0.7) + 0.05 * Math.sin(i);
      face.ctrlSource[2 * i + 1] = 0.45 * Math.sin(i * 0.7) - 0.1;
    }
    const out = new Float64Array(4);
    expect([...fitSourceAlignment(face, face.ctrlSource, R, out)].map((v) => +v.toFixed(9))).toEqual([1, 0, 0, 0]);
    // The head turned by 10 degrees, 8% larger and moved: the crop-pixel similarity is recovered from the points the
    // fit uses, whatever the others (the expression) do.
    const ang = (10 * Math.PI) / 180;
    const [a, b, tx, ty] = [1.08 * Math.cos(ang), 1.08 * Math.sin(ang), -7.5, 4.25];
    const toCrop = (g: number, g0: number): number => ((g - g0) / 1.6) * 199 * (R / 200) + (0.5 * R) / 200;
    const toGrid = (c: number, g0: number): number => ((c - (0.5 * R) / 200) / ((199 * R) / 200)) * 1.6 + g0;
    const ctrl = new Float64Array(face.ctrlSource);
    for (let i = 0; i < 96; i++) {
      const x = toCrop(face.ctrlSource[2 * i]!, -0.8);
      const y = toCrop(face.ctrlSource[2 * i + 1]!, -0.8);
      ctrl[2 * i] = toGrid(a * x - b * y + tx, -0.8);
      ctrl[2 * i + 1] = toGrid(b * x + a * y + ty, -0.8);
    }
    for (let i = 48; i < 68; i++) if (!ALIGN_POINTS.includes(i)) ctrl[2 * i + 1]! += 0.2; // mouth points: ignored
    fitSourceAlignment(face, ctrl, R, out);
    expect(out[0]).toBeCloseTo(a, 6);
    expect(out[1]).toBeCloseTo(b, 6);
    expect(out[2]).toBeCloseTo(tx, 4);
    expect(out[3]).toBeCloseTo(ty, 4);
    // Degenerate source points (all in one place) give the identity, never NaN.
    const flat = { ...face, ctrlSource: new Float64Array(2 * 96).fill(0.1) };
    expect([...fitSourceAlignment(flat, ctrl, R, out)]).toEqual([1, 0, 0, 0]);
  });

  it('the aligned source at run time equals the one the training script computes (PyTorch grid_sample)', () => {
    const R = 128;
    const C = CANVAS_SCALE * R;
    const canvas = new Uint8Array(C * C * 3);
    for (let y = 0; y < C; y++)
      for (let x = 0; x < C; x++)
        for (let c = 0; c < 3; c++) canvas[(y * C + x) * 3 + c] = (x * 7 + y * 3 + c * 50 + ((x * y) % 17)) & 255;
    const dir = mkdtempSync(path.join(os.tmpdir(), 'aligned-'));
    try {
      const aligns = [
        [1, 0, 0, 0],
        [1.08 * Math.cos(0.2), 1.08 * Math.sin(0.2), -9.5, 6.25],
        [0.9 * Math.cos(-0.3), 0.9 * Math.sin(-0.3), 40, -35], // far enough to read past the canvas edge
      ];
      writeFileSync(path.join(dir, 'canvas.bin'), canvas);
      writeFileSync(path.join(dir, 'align.json'), JSON.stringify(aligns));
      const py = [
        'import sys, json, numpy as np, torch',
        `sys.path.insert(0, ${JSON.stringify(path.join(repoRoot, 'models', 'tools'))})`,
        'from refiner.data import aligned_source',
        `d = ${JSON.stringify(dir)}`,
        `cv = torch.from_numpy(np.fromfile(d + '/canvas.bin', np.uint8).reshape(${C}, ${C}, 3)).permute(2, 0, 1).float() / 255`,
        `al = torch.tensor(json.load(open(d + '/align.json')), dtype=torch.float32)`,
        `out = aligned_source(cv[None].expand(len(al), -1, -1, -1), al, ${R}, ${CANVAS_SCALE})`,
        `out.numpy().astype(np.float32).tofile(d + '/py.bin')`,
      ].join('\n');
      const r = spawnSync('/usr/bin/python3', ['-c', py], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      const ref = new Float32Array(readFileSync(path.join(dir, 'py.bin')).buffer.slice(0));
      aligns.forEach((al, k) => {
        const ts = sampleAligned(canvas, R, al, new Float32Array(3 * R * R));
        let maxDiff = 0;
        for (let i = 0; i < ts.length; i++) maxDiff = Math.max(maxDiff, Math.abs(ts[i]! - ref[k * ts.length + i]!));
        expect(maxDiff, `alignment ${k}`).toBeLessThan(1e-4);
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the feature mask keeps the eyes and the mouth, not the cheeks, forehead or chin, and follows an opening mouth', async () => {
    const { createDefaultVision, DefaultEngine } = await import('../../server/avatar/engines/default/index.js');
    const { projectRoot } = await import('../../server/config.js');
    const vision = await createDefaultVision();
    const engine = await DefaultEngine.create({ modelPack: path.join(projectRoot, 'models', 'default'), vision });
    try {
      await engine.prepare(await loadImageRgb(portraitFile('real_woman_dark_hair.png')));
      const face = engine.prepared!;
      const R = 128;
      const m = featureMask(face, face.ctrlSource, R, new Float32Array(R * R));
      const g = face.paste.grid;
      const at = (i: number, dy = 0): number => {
        const u = Math.floor(((face.ctrlSource[2 * i]! - g[0]!) / (g[2]! - g[0]!)) * (R - 1) + 0.5);
        const v = Math.floor(((face.ctrlSource[2 * i + 1]! - g[1]!) / (g[3]! - g[1]!)) * (R - 1) + 0.5 + dy);
        return m[v * R + u]!;
      };
      // Eye corners and pupils' rims, the lip corners and the lip centres: kept.
      for (const i of [36, 39, 42, 45, 37, 44, 48, 54, 51, 57]) expect(at(i), `point ${i}`).toBe(1);
      // Jaw, chin and the nose tip: not kept.
      for (const i of [0, 2, 8, 14, 16, 30]) expect(at(i), `point ${i}`).toBeLessThan(0.1);
      const kept = m.reduce((a, b) => a + b, 0) / (R * R);
      expect(kept).toBeGreaterThan(0.03);
      expect(kept).toBeLessThan(0.3);
      // An open mouth (lower lip and chin points 12% of the crop lower) grows the mouth region downwards.
      const open = new Float64Array(face.ctrlSource);
      for (const i of [55, 56, 57, 58, 59, 65, 66, 67]) open[2 * i + 1]! += 0.12 * (g[3]! - g[1]!);
      const m2 = featureMask(face, open, R, new Float32Array(R * R));
      expect(m2.reduce((a, b) => a + b, 0)).toBeGreaterThan(m.reduce((a, b) => a + b, 0) * 1.05);
      expect(() => featureMask(face, open, R, new Float32Array(5))).toThrow(TypeError);
    } finally {
      engine.close();
    }
  });
});
