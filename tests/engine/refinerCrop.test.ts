/**
 * Train/run-time parity of the refiner's view (refinerCrop.ts, refiner.ts): the live engine converts only the paste
 * region of its I420 output to RGB and resamples it; the training samples converted the whole frame and resampled the
 * same region. Both must give the same pixels, or the refiner sees at run time what it never saw in training.
 */
import { describe, expect, it } from 'vitest';
import { regionToRgb } from '../../server/avatar/engines/default/refiner.js';
import { sampleRegion } from '../../server/avatar/engines/default/refinerCrop.js';
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
          maxDiff = Math.max(maxDiff, Math.abs(region.data[(y * w + x) * 3 + c]! - whole.data[((y0 + y) * whole.width + x0 + x) * 3 + c]!));
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
});
