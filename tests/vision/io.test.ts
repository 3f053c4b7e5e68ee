import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import {
  encodeImage,
  i420ToGray,
  i420ToRgb,
  loadImageRgb,
  resizeRgb,
  rgbToGray,
  rgbToI420,
  saveImage,
} from '../../server/util/image.js';
import { probeVideo, readVideoFrames, VideoWriter, writeY4m } from '../../server/util/video.js';
import { mediaDir, readPgm, referenceMissing, refDir, requireShared } from './helpers.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'vision-io-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const portraits = requireShared(path.join(mediaDir, 'portraits'));
const driving = requireShared(path.join(mediaDir, 'driving'));
const noRef = referenceMissing('the reference-frame comparison of io.test.ts');

describe('images', () => {
  it.skipIf(noRef)('decodes an RGBA PNG to RGB and the gray rule matches the reference frame', async () => {
    const img = await loadImageRgb(path.join(portraits, 'painting_black_woman_afro.png'));
    expect([img.width, img.height, img.data.length]).toEqual([508, 504, 508 * 504 * 3]);
    const gray = rgbToGray(img);
    // The reference frame is this portrait letterboxed into 640x480 (INTER_AREA, so not pixel-identical): compare
    // the mean brightness of the content area instead.
    const ref = readPgm(path.join(refDir, 'frames/portrait-painting_black_woman_afro.pgm'));
    let a = 0;
    for (const v of gray.data) a += v;
    let b = 0;
    let n = 0;
    for (let y = 0; y < 480; y++) for (let x = 78; x < 562; x++, n++) b += ref.data[y * 640 + x]!;
    expect(Math.abs(a / gray.data.length - b / n)).toBeLessThan(2);
  });

  it('gray = floor((R+G+B)/3)', () => {
    const rgb = { width: 2, height: 1, data: Uint8Array.from([255, 255, 254, 1, 1, 0]) };
    expect(Array.from(rgbToGray(rgb).data)).toEqual([254, 0]);
  });

  it('applies EXIF orientation and sniffs content, not the extension', async () => {
    const raw = Buffer.alloc(40 * 20 * 3, 200);
    const jpg = await sharp(raw, { raw: { width: 40, height: 20, channels: 3 } })
      .jpeg()
      .withMetadata({ orientation: 6 })
      .toBuffer();
    const file = path.join(tmp, 'rotated.png');
    writeFileSync(file, jpg);
    const img = await loadImageRgb(file);
    expect([img.width, img.height]).toEqual([20, 40]);
  });

  it('grayscale input comes back as RGB; errors are clear', async () => {
    const g = await sharp(Buffer.alloc(16, 77), { raw: { width: 4, height: 4, channels: 1 } })
      .png()
      .toBuffer();
    const img = await loadImageRgb(g);
    expect(img.data.length).toBe(48);
    expect(img.data[0]).toBe(77);
    await expect(loadImageRgb(path.join(tmp, 'missing.png'))).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(loadImageRgb(Buffer.from('not an image'))).rejects.toMatchObject({ code: 'UNSUPPORTED_MEDIA_TYPE' });
  });

  it('saves PNG and JPEG by extension and round-trips PNG exactly', async () => {
    const img = await loadImageRgb(path.join(portraits, 'anime_spiky_blond_hair.png'));
    const png = path.join(tmp, 'a.png');
    await saveImage(png, img);
    const back = await loadImageRgb(png);
    expect(Buffer.compare(Buffer.from(back.data), Buffer.from(img.data))).toBe(0);
    await saveImage(path.join(tmp, 'a.jpg'), img);
    expect((await loadImageRgb(path.join(tmp, 'a.jpg'))).width).toBe(img.width);
    await expect(saveImage(path.join(tmp, 'a.bmp'), img)).rejects.toMatchObject({ code: 'UNSUPPORTED_MEDIA_TYPE' });
    expect((await encodeImage(img, 'jpeg')).subarray(0, 2)).toEqual(Buffer.from([0xff, 0xd8]));
  });

  it('I420 <-> RGB (BT.601 limited range) round trip and direct I420 -> gray', async () => {
    const img = await loadImageRgb(path.join(portraits, 'real_woman_dark_hair.png'));
    const yuv = rgbToI420(img);
    expect(yuv.data.length).toBe(474 * 474 * 1.5);
    // Limited range: white is Y 235, black Y 16.
    const bw = rgbToI420({
      width: 2,
      height: 2,
      data: Uint8Array.from([255, 255, 255, 255, 255, 255, 0, 0, 0, 0, 0, 0]),
    });
    expect([bw.data[0], bw.data[2]]).toEqual([235, 16]);
    const rgb = i420ToRgb(yuv);
    let err = 0;
    for (let i = 0; i < rgb.data.length; i++) err += Math.abs(rgb.data[i]! - img.data[i]!);
    expect(err / rgb.data.length).toBeLessThan(4);
    const g1 = i420ToGray(yuv);
    const g2 = rgbToGray(rgb);
    expect(Buffer.compare(Buffer.from(g1.data), Buffer.from(g2.data))).toBe(0);
  });

  it('resizeRgb keeps a constant image constant and checks sizes', () => {
    const src = { width: 7, height: 5, data: new Uint8Array(7 * 5 * 3).fill(90) };
    const out = resizeRgb(src, 16, 3);
    expect(out.data.every((v) => v === 90)).toBe(true);
    expect(() => resizeRgb(src, 0, 3)).toThrow(TypeError);
  });
});

describe('video', () => {
  it('probes size, SAR, fps, frame count and audio', async () => {
    const a = await probeVideo(path.join(driving, 'man_glasses_cheek_puff_eyes_closed.mp4'));
    expect(a).toMatchObject({
      width: 480,
      height: 480,
      storedWidth: 512,
      storedHeight: 480,
      sar: [15, 16],
      fps: 30,
      frameCount: 587,
      hasAudio: true,
    });
    const b = await probeVideo(path.join(driving, 'man_dreadlocks_talking_smile.mp4'));
    expect(b.hasAudio).toBe(false);
    expect(b.frameCount).toBe(60);
  });

  it('reads frames at display size, rgb24 and gray, up to maxFrames', async () => {
    const file = path.join(driving, 'man_glasses_cheek_puff_eyes_closed.mp4');
    let n = 0;
    for await (const f of readVideoFrames(file, { format: 'gray', maxFrames: 5 })) {
      expect([f.index, f.width, f.height, f.data.length]).toEqual([n, 480, 480, 480 * 480]);
      n++;
    }
    expect(n).toBe(5);
    for await (const f of readVideoFrames(file, { format: 'rgb24', width: 240 })) {
      expect([f.width, f.height, f.data.length]).toEqual([240, 240, 240 * 240 * 3]);
      break;
    }
  });

  it('clear errors for a missing file and for a file that is not a video', async () => {
    await expect(probeVideo(path.join(tmp, 'nope.mp4'))).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(probeVideo(path.join(portraits, 'cartoon_3d_boy.jpg'))).rejects.toMatchObject({
      code: 'UNSUPPORTED_MEDIA_TYPE',
    });
    const junk = path.join(tmp, 'junk.mp4');
    writeFileSync(junk, 'definitely not a video');
    await expect(probeVideo(junk)).rejects.toMatchObject({ code: 'UNSUPPORTED_MEDIA_TYPE' });
    const it = readVideoFrames(junk, { format: 'gray' });
    await expect(it.next()).rejects.toMatchObject({ code: 'UNSUPPORTED_MEDIA_TYPE' });
  });

  it('VideoWriter encodes H.264 with the source audio; close is idempotent; odd sizes are padded', async () => {
    const src = path.join(driving, 'man_mouth_wide_open.mp4');
    const out = path.join(tmp, 'out.mp4');
    const w = await VideoWriter.open(out, { width: 480, height: 480, fps: 30, audioFrom: src });
    for await (const f of readVideoFrames(src, { format: 'rgb24', maxFrames: 30 })) await w.write(f.data);
    await w.close();
    await w.close();
    expect(w.closed).toBe(true);
    await expect(w.write(new Uint8Array(480 * 480 * 3))).rejects.toMatchObject({ code: 'INVALID_STATE' });
    const info = await probeVideo(out);
    expect(info).toMatchObject({ width: 480, height: 480, frameCount: 30, hasAudio: true, codec: 'h264' });

    const odd = path.join(tmp, 'odd.mp4');
    const w2 = await VideoWriter.open(odd, { width: 33, height: 21, fps: 10 });
    await expect(w2.write(new Uint8Array(5))).rejects.toThrow(TypeError);
    for (let i = 0; i < 5; i++) await w2.write(new Uint8Array(33 * 21 * 3).fill(i * 40));
    await w2.close();
    expect(await probeVideo(odd)).toMatchObject({ width: 34, height: 22, frameCount: 5, hasAudio: false });
  });

  it('writeY4m converts a clip for a fake camera', async () => {
    const out = path.join(tmp, 'cam.y4m');
    await writeY4m(path.join(driving, 'man_mouth_wide_open.mp4'), out, { width: 320, height: 240, maxFrames: 3 });
    const buf = readFileSync(out);
    expect(buf.subarray(0, 9).toString()).toBe('YUV4MPEG2');
    expect(buf.length).toBeGreaterThan(3 * 320 * 240 * 1.5);
  });
});
