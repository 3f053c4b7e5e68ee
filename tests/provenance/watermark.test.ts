/**
 * The watermark on real pictures (the shared portraits, resized to 512²): invisible by PSNR (>= 40 dB on luma),
 * decoded from one frame, absent from the unmarked pictures, and a window that straddles a payload change (a live
 * stream's minute) still decodes from its clean half. The embedder's fast paths (4 pixels per word, cached per-payload
 * signs) give exactly the bytes of the plain per-pixel definition (watermarkReference).
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { I420Frame } from '../../server/types/image.js';
import { payloadHex } from '../../server/provenance/payload.js';
import { Watermarker, WatermarkDetector, watermarkReference } from '../../server/provenance/watermark.js';
import { loadImageRgb, resizeRgb, rgbToI420 } from '../../server/util/image.js';
import { portraitFile } from '../helpers/media.js';

async function portraits(): Promise<{ name: string; frame: I420Frame }[]> {
  const dir = path.dirname(portraitFile('real_woman_dark_hair.png'));
  const out = [];
  for (const name of (await readdir(dir)).filter((n) => /\.(png|jpe?g)$/i.test(n)).sort()) {
    out.push({ name, frame: rgbToI420(resizeRgb(await loadImageRgb(path.join(dir, name)), 512, 512)) });
  }
  return out;
}

function copy(f: I420Frame): I420Frame {
  return { width: f.width, height: f.height, data: f.data.slice() };
}

describe('watermark on the shared portraits', () => {
  it('PSNR >= 40 dB, decoded from one frame, absent from the originals', async () => {
    const all = await portraits();
    expect(all.length).toBeGreaterThanOrEqual(10);
    const p = { id: 0x0badcafe, slot: 12345 };
    for (const { name, frame } of all) {
      const marked = copy(frame);
      new Watermarker().apply(marked, p);
      let sq = 0;
      const n = frame.width * frame.height;
      for (let i = 0; i < n; i++) sq += (marked.data[i]! - frame.data[i]!) ** 2;
      const psnr = 10 * Math.log10((255 * 255 * n) / sq);
      expect(psnr, name).toBeGreaterThanOrEqual(40);
      // Chroma untouched.
      expect(marked.data.subarray(n)).toEqual(frame.data.subarray(n));
      const d = new WatermarkDetector();
      d.addI420(marked);
      expect(d.result().payload, name).toBe(payloadHex(p));
      const u = new WatermarkDetector();
      u.addI420(frame);
      expect(u.result().present, name).toBe(false);
    }
  }, 60_000);

  it('a window across a payload change decodes from its clean half', async () => {
    const frame = (await portraits())[0]!.frame;
    const a = { id: 7, slot: 100 };
    const b = { id: 7, slot: 101 };
    const wm = new Watermarker();
    const fa = copy(frame);
    wm.apply(fa, a);
    const fb = copy(frame);
    wm.apply(fb, b);
    const det = new WatermarkDetector();
    for (let i = 0; i < 30; i++) det.addI420(i < 12 ? fa : fb);
    const r = det.result();
    expect(r.frames).toBe(30);
    expect(r.payload).toBe(payloadHex(b));
    det.reset();
    for (let i = 0; i < 30; i++) det.addI420(i < 20 ? fa : fb);
    expect(det.result().payload).toBe(payloadHex(a));
  }, 60_000);

  it('the word-wise and per-pixel embedders give exactly the reference bytes, at any size and alignment', async () => {
    const all = (await portraits()).slice(0, 4);
    const wm = new Watermarker();
    const p = { id: 0x5eed1234, slot: 4242 };
    const check = (frame: I420Frame, label: string, embedder = wm, strength = 2, cap = 2): void => {
      const fast = copy(frame);
      embedder.apply(fast, p);
      const ref = copy(frame);
      watermarkReference(ref, p, strength, cap);
      expect(Buffer.compare(fast.data, ref.data), label).toBe(0);
      expect(Buffer.compare(fast.data, frame.data), label).not.toBe(0);
    };
    // 512²: one word per 4 pixels of one lattice column; 384 x 288: words straddle lattice columns; 250 x 170: not a
    // multiple of 4, per pixel.
    expect(Watermarker.wordWise(512, 512)).toBe(true);
    expect(Watermarker.wordWise(384, 288)).toBe(true);
    expect(Watermarker.wordWise(250, 170)).toBe(false);
    for (const { name, frame } of all) {
      check(frame, `${name} 512`);
      for (const [w, h] of [
        [384, 288],
        [250, 170],
        [512, 520],
      ] as const) {
        check(
          rgbToI420(resizeRgb(await loadImageRgb(path.join(path.dirname(portraitFile(name)), name)), w, h)),
          `${name} ${w}x${h}`,
        );
      }
      // A Y plane that does not start on a word boundary takes the per-pixel path.
      const buf = new Uint8Array(frame.data.length + 1);
      buf.set(frame.data, 1);
      const shifted = { width: frame.width, height: frame.height, data: buf.subarray(1) };
      const fast = copy(frame);
      wm.apply(shifted, p);
      watermarkReference(fast, p);
      expect(Buffer.compare(shifted.data, fast.data), `${name} unaligned`).toBe(0);
    }
    // Saturation at both ends: pixels within a few levels of 0 and 255, with a stronger pattern (|offset| up to 8).
    let seed = 7;
    const rnd = (): number => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 24;
    const strong = new Watermarker(5, 3);
    for (const [w, h] of [
      [512, 512],
      [384, 288],
      [250, 170],
    ] as const) {
      const data = new Uint8Array((w * h * 3) / 2);
      for (let i = 0; i < data.length; i++) {
        const r = rnd();
        data[i] = r < 128 ? r & 7 : 255 - (r & 7);
      }
      check({ width: w, height: h, data }, `extremes ${w}x${h}`, strong, 5, 3);
    }
  }, 60_000);

  it('the cached per-payload signs follow a payload change (and back)', async () => {
    const frame = (await portraits())[1]!.frame;
    const wm = new Watermarker();
    for (const p of [
      { id: 11, slot: 500 },
      { id: 11, slot: 501 },
      { id: 12, slot: 501 },
      { id: 11, slot: 500 },
    ]) {
      const fast = copy(frame);
      wm.apply(fast, p);
      const ref = copy(frame);
      watermarkReference(ref, p);
      expect(Buffer.compare(fast.data, ref.data)).toBe(0);
      const d = new WatermarkDetector();
      d.addI420(fast);
      expect(d.result().payload).toBe(payloadHex(p));
    }
  }, 60_000);
});
