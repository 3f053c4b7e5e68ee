import { describe, expect, it } from 'vitest';
import {
  akd,
  alignedPointDistance,
  angleDiff,
  interOcularDistance,
  l1,
  laplacianEnergy,
  Mean,
  meanPointDistance,
  perceptualDistance,
  poseErrorDeg,
  psnr,
  relativeMotion,
  sharpnessRatio,
  ssim,
  type ActivationMap,
  type PixelImage,
} from '../../server/quality/metrics.js';

/** A deterministic textured RGB image (a smooth pattern plus pseudo-random detail). */
function texture(w: number, h: number, seed = 1): PixelImage {
  const data = new Uint8Array(w * h * 3);
  let s = seed;
  for (let i = 0; i < data.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    const p = Math.floor(i / 3);
    const x = p % w;
    const y = Math.floor(p / w);
    data[i] = Math.max(
      0,
      Math.min(255, Math.round(128 + 60 * Math.sin(x / 7 + (i % 3)) * Math.cos(y / 9) + ((s >>> 24) % 40) - 20)),
    );
  }
  return { width: w, height: h, data };
}

function constant(w: number, h: number, v: number, ch = 1): PixelImage {
  return { width: w, height: h, data: new Uint8Array(w * h * ch).fill(v) };
}

/** A frontal 68-point face: eyes at y=100, eye centres 60 px apart (x 70 and 130), mouth corners at y=160. */
function face(): Float64Array {
  const lm = new Float64Array(136);
  for (let i = 0; i < 68; i++) {
    lm[2 * i] = 100 + ((i * 37) % 50) - 25;
    lm[2 * i + 1] = 120 + ((i * 53) % 60) - 30;
  }
  // Eyes: points 36-41 around (70, 100), 42-47 around (130, 100), placed symmetrically so the centres are exact.
  const ring = [
    [-10, 0],
    [-5, -3],
    [5, -3],
    [10, 0],
    [5, 3],
    [-5, 3],
  ] as const;
  ring.forEach(([dx, dy], k) => {
    lm[2 * (36 + k)] = 70 + dx;
    lm[2 * (36 + k) + 1] = 100 + dy;
    lm[2 * (42 + k)] = 130 + dx;
    lm[2 * (42 + k) + 1] = 100 + dy;
  });
  return lm;
}

describe('L1', () => {
  it('is 0 for identical images and |a-b|/255 for constants', () => {
    const t = texture(40, 30);
    expect(l1(t, t)).toBe(0);
    expect(l1(constant(10, 10, 100, 3), constant(10, 10, 151, 3))).toBeCloseTo(51 / 255, 12);
    expect(l1(constant(8, 8, 0), constant(8, 8, 255))).toBe(1);
  });
  it('refuses images of different sizes', () => {
    expect(() => l1(constant(10, 10, 0), constant(10, 11, 0))).toThrow(TypeError);
  });
});

describe('PSNR', () => {
  it('is +Infinity for identical images', () => {
    const t = texture(32, 32);
    expect(psnr(t, t)).toBe(Number.POSITIVE_INFINITY);
  });
  it('matches a known noise level: ±5 on every sample is MSE 25, 34.15 dB', () => {
    const a = texture(64, 48);
    const b: PixelImage = { ...a, data: a.data.map((v, i) => (i % 2 ? v + 5 : v - 5)) };
    // texture() stays inside 8..247, so ±5 never clips.
    expect(Math.min(...a.data)).toBeGreaterThanOrEqual(5);
    expect(Math.max(...a.data)).toBeLessThanOrEqual(250);
    expect(psnr(a, b)).toBeCloseTo(10 * Math.log10((255 * 255) / 25), 10);
    expect(psnr(a, b)).toBeCloseTo(34.1514, 3);
  });
});

describe('SSIM (Gaussian 11x11, sigma 1.5)', () => {
  it('is 1 for an image with itself (gray and RGB)', () => {
    const t = texture(48, 40);
    expect(ssim(t, t)).toBeCloseTo(1, 12);
    const g = { width: 48, height: 40, data: t.data.filter((_, i) => i % 3 === 0) };
    expect(ssim(g, g)).toBeCloseTo(1, 12);
  });
  it('matches the closed form for two constant images (only the luminance term remains)', () => {
    const a = 100;
    const b = 140;
    const c1 = (0.01 * 255) ** 2;
    const expected = (2 * a * b + c1) / (a * a + b * b + c1);
    expect(ssim(constant(20, 20, a), constant(20, 20, b))).toBeCloseTo(expected, 10);
  });
  it('drops with noise, more noise scores lower, and stays in (0, 1]', () => {
    const t = texture(64, 64);
    const noisy = (amp: number): PixelImage => {
      let s = 7;
      return {
        ...t,
        data: t.data.map((v) => {
          s = (s * 1664525 + 1013904223) >>> 0;
          return Math.max(0, Math.min(255, v + Math.round(((s >>> 16) / 65536 - 0.5) * 2 * amp)));
        }),
      };
    };
    const s10 = ssim(t, noisy(10));
    const s40 = ssim(t, noisy(40));
    expect(s10).toBeLessThan(1);
    expect(s40).toBeLessThan(s10);
    expect(s40).toBeGreaterThan(0);
  });
  it('matches the OpenCV reference recipe (GaussianBlur 11x11 sigma 1.5, valid region) on fixed images', () => {
    // Reference values computed once with Debian's python3-opencv 4.6 + numpy on these exact pixels.
    const lcgImage = (w: number, h: number, seed: number): Uint8Array => {
      const d = new Uint8Array(w * h * 3);
      let s = seed;
      for (let i = 0; i < d.length; i++) {
        s = (Math.imul(s, 1103515245) + 12345) >>> 0;
        const p = Math.floor(i / 3);
        d[i] =
          Math.round(127 + 90 * Math.sin((p % w) / 5 + (i % 3)) * Math.cos(Math.floor(p / w) / 4)) ^ ((s >>> 28) & 7);
      }
      return d;
    };
    const a = { width: 32, height: 24, data: lcgImage(32, 24, 3) };
    const b = { width: 32, height: 24, data: lcgImage(32, 24, 99).map((v, i) => (v + ((i * 7) % 23)) & 255) };
    expect(ssim(a, b)).toBeCloseTo(0.928027080994009, 12);
    const red = (img: PixelImage): PixelImage => ({
      width: 32,
      height: 24,
      data: img.data.filter((_, i) => i % 3 === 0),
    });
    expect(ssim(red(a), red(b))).toBeCloseTo(0.9308505404540087, 12);
  });
  it('is symmetric and refuses images below the window size', () => {
    const a = texture(30, 30, 1);
    const b = texture(30, 30, 2);
    expect(ssim(a, b)).toBeCloseTo(ssim(b, a), 12);
    expect(() => ssim(constant(10, 10, 1), constant(10, 10, 1))).toThrow(TypeError);
  });
});

describe('landmark metrics', () => {
  it('inter-ocular distance is the distance of the eye centres', () => {
    expect(interOcularDistance(face())).toBeCloseTo(60, 10);
  });
  it('AKD of landmarks shifted by (3, 4) is 5 / inter-ocular distance', () => {
    const truth = face();
    const shifted = truth.map((v, i) => v + (i % 2 ? 4 : 3));
    expect(meanPointDistance(shifted, truth)).toBeCloseTo(5, 10);
    expect(akd(shifted, truth)).toBeCloseTo(5 / 60, 10);
    expect(akd(truth, truth)).toBe(0);
    expect(akd(shifted, truth, 10)).toBeCloseTo(0.5, 10);
  });
  it('aligned distance ignores position, size and roll but keeps expression', () => {
    const truth = face();
    const a = (deg: number): number => (deg * Math.PI) / 180;
    const moved = new Float64Array(136);
    for (let i = 0; i < 68; i++) {
      const x = truth[2 * i]! - 100;
      const y = truth[2 * i + 1]! - 120;
      moved[2 * i] = 300 + 1.7 * (x * Math.cos(a(20)) - y * Math.sin(a(20)));
      moved[2 * i + 1] = 50 + 1.7 * (x * Math.sin(a(20)) + y * Math.cos(a(20)));
    }
    expect(alignedPointDistance(moved, truth)).toBeCloseTo(0, 9);
    expect(akd(moved, truth)).toBeGreaterThan(1);
    const open = truth.slice();
    for (let i = 48; i < 68; i++) open[2 * i + 1]! += 6;
    expect(alignedPointDistance(open, truth)).toBeGreaterThan(0.5);
    // Moving and scaling the open-mouth face changes nothing.
    const openMoved = open.map((v, i) => 2 * v + (i % 2 ? -30 : 45));
    expect(alignedPointDistance(openMoved, truth)).toBeCloseTo(alignedPointDistance(open, truth), 9);
  });
  it('AKD when only the mouth moves averages over all 68 points', () => {
    const truth = face();
    const moved = truth.slice();
    for (let i = 48; i < 68; i++) moved[2 * i + 1]! += 6; // 20 mouth points move 6 px down
    expect(akd(moved, truth)).toBeCloseTo((20 * 6) / 68 / 60, 10);
    expect(meanPointDistance(moved, truth, 48, 68)).toBeCloseTo(6, 10);
    expect(meanPointDistance(moved, truth, 0, 48)).toBe(0);
    expect(() => meanPointDistance(moved, truth, 60, 70)).toThrow(TypeError);
  });
  it('relative motion is scale-free: the same motion on a face twice the size gives the same numbers', () => {
    const ref = face();
    const cur = ref.map((v, i) => v + (i >= 96 && i % 2 ? 6 : 0));
    const big = ref.map((v) => v * 2);
    const bigCur = cur.map((v) => v * 2);
    const a = relativeMotion(cur, ref);
    const b = relativeMotion(bigCur, big);
    for (let i = 0; i < a.length; i++) expect(b[i]).toBeCloseTo(a[i]!, 12);
  });
  it('pose error is the mean absolute angle difference, wrapping at 180', () => {
    expect(poseErrorDeg({ yaw: 10, pitch: -5, roll: 2 }, { yaw: 4, pitch: 1, roll: 2 })).toBeCloseTo(4, 12);
    expect(angleDiff(179, -179)).toBeCloseTo(-2, 12);
    expect(poseErrorDeg({ yaw: 179, pitch: 0, roll: 0 }, { yaw: -179, pitch: 0, roll: 0 })).toBeCloseTo(2 / 3, 12);
  });
  it('Mean is null when nothing was added', () => {
    const m = new Mean();
    expect(m.value).toBeNull();
    m.add(1);
    m.add(3);
    expect(m.value).toBe(2);
    expect(m.count).toBe(2);
  });
});

/** A 3×3 box blur (edge pixels kept), `passes` times. */
function boxBlur(img: PixelImage, passes = 1): PixelImage {
  const ch = img.data.length / (img.width * img.height);
  let src = img.data;
  for (let p = 0; p < passes; p++) {
    const out = src.slice();
    for (let y = 1; y < img.height - 1; y++)
      for (let x = 1; x < img.width - 1; x++)
        for (let c = 0; c < ch; c++) {
          let s = 0;
          for (let dy = -1; dy <= 1; dy++)
            for (let dx = -1; dx <= 1; dx++) s += src[((y + dy) * img.width + x + dx) * ch + c]!;
          out[(y * img.width + x) * ch + c] = Math.round(s / 9);
        }
    src = out;
  }
  return { width: img.width, height: img.height, data: src };
}

describe('sharpness (Laplacian energy)', () => {
  it('is 0 for a flat image and a linear ramp, and matches the closed form for a checkerboard', () => {
    expect(laplacianEnergy(constant(16, 16, 90, 3))).toBe(0);
    const ramp: PixelImage = { width: 16, height: 16, data: new Uint8Array(256).map((_, i) => (i % 16) * 10) };
    expect(laplacianEnergy(ramp)).toBe(0);
    // 0/100 checkerboard: the Laplacian is ±400 (4 neighbours of the other colour), half each: variance 400².
    const board: PixelImage = {
      width: 8,
      height: 8,
      data: new Uint8Array(64).map((_, i) => (((i % 8) + (i >> 3)) % 2 ? 100 : 0)),
    };
    expect(laplacianEnergy(board)).toBeCloseTo(160_000, 6);
  });

  it('an identical copy scores 1, a blurred copy below 1, more blur lower still', () => {
    const img = texture(64, 64);
    expect(sharpnessRatio(img, img)).toBe(1);
    const once = sharpnessRatio(boxBlur(img), img)!;
    const twice = sharpnessRatio(boxBlur(img, 3), img)!;
    expect(once).toBeLessThan(0.5);
    expect(twice).toBeLessThan(once);
    expect(twice).toBeGreaterThan(0);
  });

  it('reads only the boxes: a blur outside them changes nothing', () => {
    const img = texture(64, 64, 3);
    const blurred = boxBlur(img, 2);
    // The output: sharp in the left half, blurred in the right half.
    const out = { width: 64, height: 64, data: img.data.slice() };
    for (let y = 0; y < 64; y++)
      out.data.set(blurred.data.subarray((y * 64 + 32) * 3, (y * 64 + 64) * 3), (y * 64 + 32) * 3);
    const left = [{ x0: 4, y0: 4, x1: 28, y1: 60 }];
    const right = [{ x0: 36, y0: 4, x1: 60, y1: 60 }];
    expect(sharpnessRatio(out, img, left)).toBe(1);
    expect(sharpnessRatio(out, img, right)!).toBeLessThan(0.5);
    expect(sharpnessRatio(out, img, [...left, ...right])!).toBeLessThan(1);
    expect(laplacianEnergy(img, [{ x0: 10, y0: 10, x1: 10, y1: 20 }])).toBeNull(); // an empty box
  });

  it('is null where the truth is flat, and refuses images of different sizes', () => {
    expect(sharpnessRatio(texture(16, 16), constant(16, 16, 7, 3))).toBeNull();
    expect(() => sharpnessRatio(texture(16, 16), texture(16, 17))).toThrow(TypeError);
  });
});

/** An activation map (positions × channels) of non-negative pseudo-random values, as after a ReLU. */
function activations(positions: number, channels: number, seed: number): ActivationMap {
  let s = seed;
  const data = new Float32Array(positions * channels).map(() => {
    s = (s * 1103515245 + 12345) >>> 0;
    return (s >>> 8) % 7 === 0 ? 0 : ((s >>> 8) % 1000) / 100;
  });
  return { data, channels };
}

describe('face-perceptual distance (channel-normalised activations)', () => {
  const taps = (seed: number): ActivationMap[] => [activations(64, 8, seed), activations(16, 32, seed + 1)];

  it('is 0 for identical activations and for activations that differ only in scale per position', () => {
    const a = taps(1);
    expect(perceptualDistance(a, a)).toBe(0);
    // Channel normalisation: scaling a position's whole channel vector changes nothing (LPIPS's unit vectors).
    const scaled = a.map((m) => ({
      channels: m.channels,
      data: m.data.map((v, i) => v * (1 + (Math.floor(i / m.channels) % 5))),
    }));
    expect(perceptualDistance(a, scaled)).toBeCloseTo(0, 10);
  });

  it('grows with the change: one position changed < many changed < unrelated activations', () => {
    const a = taps(1);
    const some = a.map((m) => ({ channels: m.channels, data: m.data.slice() }));
    some[0]!.data.set(activations(1, 8, 99).data, 0); // one of the 64 positions of the first tap
    const many = a.map((m, t) => ({
      channels: m.channels,
      data: m.data.map((v, i) => (i < m.data.length / 2 ? taps(50)[t]!.data[i]! : v)),
    }));
    const other = taps(50);
    const d1 = perceptualDistance(a, some);
    const d2 = perceptualDistance(a, many);
    const d3 = perceptualDistance(a, other);
    expect(d1).toBeGreaterThan(0);
    expect(d2).toBeGreaterThan(d1);
    expect(d3).toBeGreaterThan(d2);
    expect(d3).toBeLessThanOrEqual(2); // non-negative activations: unit vectors at most 90 degrees apart
    expect(perceptualDistance(other, a)).toBeCloseTo(d3, 12); // symmetric
  });

  it('is 2 per position for orthogonal channel vectors and averages the taps', () => {
    const x = { data: Float32Array.from([1, 0, 3, 0]), channels: 2 }; // two positions
    const y = { data: Float32Array.from([0, 2, 3, 0]), channels: 2 }; // the first orthogonal, the second the same
    expect(perceptualDistance([x], [y])).toBeCloseTo(1, 9); // (2 + 0) / 2 positions
    expect(perceptualDistance([x, x], [y, x])).toBeCloseTo(0.5, 9); // taps averaged
  });

  it('refuses taps of different shapes or counts', () => {
    const a = taps(1);
    expect(() => perceptualDistance(a, a.slice(1))).toThrow(TypeError);
    expect(() => perceptualDistance([a[0]!], [a[1]!])).toThrow(TypeError);
    expect(() => perceptualDistance([], [])).toThrow(TypeError);
  });
});
