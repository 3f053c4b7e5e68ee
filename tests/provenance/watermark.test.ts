/**
 * The watermark on real pictures (the shared portraits, resized to 512²): invisible by PSNR (>= 40 dB on luma),
 * decoded from one frame, absent from the unmarked pictures, and a window that straddles a payload change (a live
 * stream's minute) still decodes from its clean half.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { I420Frame } from '../../server/avatar/engine.js';
import { payloadHex } from '../../server/provenance/payload.js';
import { Watermarker, WatermarkDetector } from '../../server/provenance/watermark.js';
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
});
