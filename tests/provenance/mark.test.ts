/** The visible "AI avatar" mark on I420 frames: placement per corner, only its box changes, opacity, chroma. */
import { describe, expect, it } from 'vitest';
import type { I420Frame } from '../../server/types/image.js';
import { MARK_CORNERS } from '../../server/provenance/config.js';
import { markBox, VisibleMark } from '../../server/provenance/mark.js';

function greyFrame(w: number, h: number, y = 128): I420Frame {
  const data = new Uint8Array(w * h + 2 * (w >> 1) * (h >> 1));
  data.fill(y, 0, w * h);
  data.fill(100, w * h); // a coloured picture: the mark's box pulls chroma to neutral
  return { width: w, height: h, data };
}

function changedBox(a: I420Frame, b: I420Frame): { x0: number; y0: number; x1: number; y1: number } | null {
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -1;
  let y1 = -1;
  for (let y = 0; y < a.height; y++)
    for (let x = 0; x < a.width; x++)
      if (a.data[y * a.width + x] !== b.data[y * a.width + x]) {
        x0 = Math.min(x0, x);
        y0 = Math.min(y0, y);
        x1 = Math.max(x1, x);
        y1 = Math.max(y1, y);
      }
  return x1 < 0 ? null : { x0, y0, x1, y1 };
}

describe('visible mark', () => {
  it.each(MARK_CORNERS)('lands in the %s corner and changes nothing outside its box', (corner) => {
    const w = 512;
    const h = 384;
    const orig = greyFrame(w, h);
    const f = greyFrame(w, h);
    const mark = new VisibleMark({ corner, opacity: 0.85 });
    mark.apply(f);
    const box = markBox(w, h, corner);
    const ch = changedBox(orig, f)!;
    expect(ch).not.toBeNull();
    expect(ch.x0).toBeGreaterThanOrEqual(box.x);
    expect(ch.y0).toBeGreaterThanOrEqual(box.y);
    expect(ch.x1).toBeLessThan(box.x + box.width);
    expect(ch.y1).toBeLessThan(box.y + box.height);
    // In its corner: within 1/4 of the frame of that corner's edges.
    const cx = (ch.x0 + ch.x1) / 2;
    const cy = (ch.y0 + ch.y1) / 2;
    expect(corner.endsWith('left') ? cx < w / 4 : cx > (3 * w) / 4).toBe(true);
    expect(corner.startsWith('top') ? cy < h / 4 : cy > (3 * h) / 4).toBe(true);
    // Text pixels are bright (towards 235), the box dark (towards 16): both present.
    let bright = 0;
    let dark = 0;
    for (let y = box.y; y < box.y + box.height; y++)
      for (let x = box.x; x < box.x + box.width; x++) {
        const v = f.data[y * w + x]!;
        if (v > 200) bright++;
        if (v < 80) dark++;
      }
    expect(bright).toBeGreaterThan(150);
    expect(dark).toBeGreaterThan(bright);
    // Chroma inside the box moves towards neutral, outside it stays.
    const uOff = w * h;
    expect(f.data[uOff + ((box.y + 2) >> 1) * (w >> 1) + ((box.x + 2) >> 1)]).toBeGreaterThan(100);
    expect(f.data[uOff + (h >> 2) * (w >> 1) + (w >> 2)]).toBe(100);
  });

  it('scales with the frame and follows the opacity', () => {
    const small = markBox(256, 256, 'bottom-right');
    const big = markBox(1024, 1024, 'bottom-right');
    expect(big.width).toBeGreaterThan(small.width * 3);
    const weak = greyFrame(512, 512);
    const strong = greyFrame(512, 512);
    new VisibleMark({ corner: 'top-left', opacity: 0.3 }).apply(weak);
    new VisibleMark({ corner: 'top-left', opacity: 1 }).apply(strong);
    const box = markBox(512, 512, 'top-left');
    const maxIn = (f: I420Frame): number => {
      let m = 0;
      for (let y = box.y; y < box.y + box.height; y++)
        for (let x = box.x; x < box.x + box.width; x++) m = Math.max(m, f.data[y * 512 + x]!);
      return m;
    };
    expect(maxIn(strong)).toBe(235);
    expect(maxIn(weak)).toBeLessThan(180);
    expect(() => new VisibleMark({ corner: 'top-left', opacity: 2 })).toThrow(TypeError);
  });
});
