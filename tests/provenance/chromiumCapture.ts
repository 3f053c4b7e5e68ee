/**
 * Records what a real viewer page shows: every frame its <video id="video"> presents (requestVideoFrameCallback),
 * drawn to a canvas at the video's size and read back (getImageData), as BT.601 luma. Shared by the provenance e2e
 * test and the watermark benchmark.
 */
import type { Page } from 'playwright-core';

export interface CapturedFrame {
  width: number;
  height: number;
  /** performance.now() in the page when the frame was read. */
  t: number;
  luma: Uint8Array;
}

/** Records the page's video for `ms` milliseconds. */
export async function captureVideoLuma(page: Page, ms: number): Promise<CapturedFrame[]> {
  // A string, not a function: tsx would wrap named functions in a helper that does not exist in the page.
  const raw = await page.evaluate<{ w: number; h: number; t: number; y: string }[]>(`(async (ms) => {
    const video = document.getElementById('video');
    const canvas = document.createElement('canvas');
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    const out = [];
    const end = performance.now() + ms;
    await new Promise((resolve) => {
      function grab() {
        const w = video.videoWidth;
        const h = video.videoHeight;
        if (canvas.width !== w || canvas.height !== h) {
          canvas.width = w;
          canvas.height = h;
        }
        ctx.drawImage(video, 0, 0, w, h);
        const px = ctx.getImageData(0, 0, w, h).data;
        const y = new Uint8Array(w * h);
        for (let i = 0, j = 0; i < y.length; i++, j += 4) y[i] = (66 * px[j] + 129 * px[j + 1] + 25 * px[j + 2] + 128 + 4096) >> 8;
        let s = '';
        for (let i = 0; i < y.length; i += 0x8000) s += String.fromCharCode(...y.subarray(i, i + 0x8000));
        out.push({ w, h, t: performance.now(), y: btoa(s) });
        if (performance.now() < end) video.requestVideoFrameCallback(grab);
        else resolve();
      }
      video.requestVideoFrameCallback(grab);
    });
    return out;
  })(${ms})`);
  return raw.map((f) => {
    const b = Buffer.from(f.y, 'base64');
    return { width: f.w, height: f.h, t: f.t, luma: new Uint8Array(b.buffer, b.byteOffset, b.length) };
  });
}
