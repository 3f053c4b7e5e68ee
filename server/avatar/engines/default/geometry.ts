/**
 * Pure geometry for the default engine: similarity fits, the thin-plate-spline solve, polygon rasterization, face
 * frames and the generic face depth used to rotate landmarks. No I/O, no allocation in the per-frame functions
 * (they take their scratch buffers).
 */

/** Points are packed x0,y0,x1,y1,... */
export type Points = Float32Array | Float64Array;

/** A 2D similarity: (x, y) -> (a x - b y + tx, b x + a y + ty); scale = hypot(a, b), angle = atan2(b, a). */
export interface Similarity {
  a: number;
  b: number;
  tx: number;
  ty: number;
}

/** Least-squares similarity mapping `src` onto `dst`, over the point indices `idx`. */
export function fitSimilarity(
  src: ArrayLike<number>,
  dst: ArrayLike<number>,
  idx: readonly number[],
  out: Similarity,
): Similarity {
  let sx = 0,
    sy = 0,
    dx = 0,
    dy = 0;
  const n = idx.length;
  for (const i of idx) {
    sx += src[2 * i]!;
    sy += src[2 * i + 1]!;
    dx += dst[2 * i]!;
    dy += dst[2 * i + 1]!;
  }
  sx /= n;
  sy /= n;
  dx /= n;
  dy /= n;
  let num1 = 0,
    num2 = 0,
    den = 0;
  for (const i of idx) {
    const px = src[2 * i]! - sx;
    const py = src[2 * i + 1]! - sy;
    const qx = dst[2 * i]! - dx;
    const qy = dst[2 * i + 1]! - dy;
    num1 += px * qx + py * qy;
    num2 += px * qy - py * qx;
    den += px * px + py * py;
  }
  const a = den > 0 ? num1 / den : 1;
  const b = den > 0 ? num2 / den : 0;
  out.a = a;
  out.b = b;
  out.tx = dx - (a * sx - b * sy);
  out.ty = dy - (b * sx + a * sy);
  return out;
}

/** Applies `s` to every point of `src`, writing `dst` (may alias). */
export function applySimilarity(s: Similarity, src: Points, dst: Points): void {
  for (let i = 0; i < src.length; i += 2) {
    const x = src[i]!;
    const y = src[i + 1]!;
    dst[i] = s.a * x - s.b * y + s.tx;
    dst[i + 1] = s.b * x + s.a * y + s.ty;
  }
}

/** The inverse similarity. */
export function invertSimilarity(s: Similarity, out: Similarity): Similarity {
  const d = s.a * s.a + s.b * s.b;
  const a = s.a / d;
  const b = -s.b / d;
  out.a = a;
  out.b = b;
  out.tx = -(a * s.tx - b * s.ty);
  out.ty = -(b * s.tx + a * s.ty);
  return out;
}

/** TPS kernel U(r^2) = r^2 log r^2 (U(0) = 0), as in the generator graph. */
export function tpsKernel(r2: number): number {
  return r2 > 1e-20 ? r2 * Math.log(r2) : 0;
}

/**
 * Solves the thin-plate spline that maps control points `ctrl` (the target, where the kernel is centred) to `values`
 * (the source positions): f(p) = a0 + ax px + ay py + sum_i w_i U(|p - ctrl_i|^2), for x and y at once.
 * Writes `coef` as [w_0..w_{n-1}, a0, ax, ay] rows of (x, y): length 2 (n + 3). `lambda` regularizes near-coincident
 * control points. Scratch: `mat` of (n+3)*(n+5) doubles. Gaussian elimination with partial pivoting, O(n^3/3).
 */
export function solveTps(
  ctrl: Points,
  values: Points,
  n: number,
  lambda: number,
  coef: Float32Array,
  mat: Float64Array,
): void {
  const m = n + 3;
  const cols = m + 2;
  mat.fill(0, 0, m * cols);
  for (let i = 0; i < n; i++) {
    const xi = ctrl[2 * i]!;
    const yi = ctrl[2 * i + 1]!;
    const row = i * cols;
    for (let j = i + 1; j < n; j++) {
      const ddx = xi - ctrl[2 * j]!;
      const ddy = yi - ctrl[2 * j + 1]!;
      const k = tpsKernel(ddx * ddx + ddy * ddy);
      mat[row + j] = k;
      mat[j * cols + i] = k;
    }
    mat[row + i] = lambda;
    mat[row + n] = 1;
    mat[row + n + 1] = xi;
    mat[row + n + 2] = yi;
    mat[n * cols + i] = 1;
    mat[(n + 1) * cols + i] = xi;
    mat[(n + 2) * cols + i] = yi;
    mat[row + m] = values[2 * i]!;
    mat[row + m + 1] = values[2 * i + 1]!;
  }
  for (let c = 0; c < m; c++) {
    let piv = c;
    let best = Math.abs(mat[c * cols + c]!);
    for (let r = c + 1; r < m; r++) {
      const v = Math.abs(mat[r * cols + c]!);
      if (v > best) {
        best = v;
        piv = r;
      }
    }
    if (piv !== c) {
      for (let k = c; k < cols; k++) {
        const t = mat[c * cols + k]!;
        mat[c * cols + k] = mat[piv * cols + k]!;
        mat[piv * cols + k] = t;
      }
    }
    const d = mat[c * cols + c]!;
    if (Math.abs(d) < 1e-12) continue;
    const inv = 1 / d;
    const co = c * cols;
    for (let r = c + 1; r < m; r++) {
      const ro = r * cols;
      const f = mat[ro + c]! * inv;
      if (f === 0) continue;
      // Column c below the diagonal is not read again (the pivot search and the back substitution look right of it):
      // left as it is.
      let k = c + 1;
      for (; k + 3 < cols; k += 4) {
        const a0 = mat[ro + k]! - f * mat[co + k]!;
        const a1 = mat[ro + k + 1]! - f * mat[co + k + 1]!;
        const a2 = mat[ro + k + 2]! - f * mat[co + k + 2]!;
        const a3 = mat[ro + k + 3]! - f * mat[co + k + 3]!;
        mat[ro + k] = a0;
        mat[ro + k + 1] = a1;
        mat[ro + k + 2] = a2;
        mat[ro + k + 3] = a3;
      }
      for (; k < cols; k++) mat[ro + k] = mat[ro + k]! - f * mat[co + k]!;
    }
  }
  for (let r = m - 1; r >= 0; r--) {
    const ro = r * cols;
    const d = mat[ro + r]!;
    for (let rhs = 0; rhs < 2; rhs++) {
      let s = mat[ro + m + rhs]!;
      for (let k = r + 1; k < m; k++) s -= mat[ro + k]! * coef[2 * k + rhs]!;
      coef[2 * r + rhs] = Math.abs(d) < 1e-12 ? 0 : s / d;
    }
  }
}

/** Evaluates a solved TPS at (x, y) (tests and diagnostics; the generator does this for every node). */
export function evalTps(ctrl: Points, n: number, coef: Float32Array, x: number, y: number): [number, number] {
  let fx = coef[2 * n]! + coef[2 * (n + 1)]! * x + coef[2 * (n + 2)]! * y;
  let fy = coef[2 * n + 1]! + coef[2 * (n + 1) + 1]! * x + coef[2 * (n + 2) + 1]! * y;
  for (let i = 0; i < n; i++) {
    const dx = x - ctrl[2 * i]!;
    const dy = y - ctrl[2 * i + 1]!;
    const u = tpsKernel(dx * dx + dy * dy);
    fx += coef[2 * i]! * u;
    fy += coef[2 * i + 1]! * u;
  }
  return [fx, fy];
}

/**
 * Adds an anti-aliased filled polygon to `mask` (m x m, row-major, values clamped to 1), with vertices in node units
 * (node (i, j) at x = i, y = j). 4 sub-scanlines per row and exact horizontal coverage at the span ends.
 * `scratch` holds at least the vertex count of crossings.
 */
export function fillPolygon(
  mask: Float32Array,
  m: number,
  xs: Points,
  ys: Points,
  count: number,
  scratch: Float64Array,
): void {
  let minY = Infinity,
    maxY = -Infinity;
  for (let i = 0; i < count; i++) {
    minY = Math.min(minY, ys[i]!);
    maxY = Math.max(maxY, ys[i]!);
  }
  const SUB = 4;
  const r0 = Math.max(0, Math.floor(minY));
  const r1 = Math.min(m - 1, Math.ceil(maxY));
  for (let row = r0; row <= r1; row++) {
    for (let s = 0; s < SUB; s++) {
      const y = row - 0.5 + (s + 0.5) / SUB;
      let nx = 0;
      for (let i = 0, j = count - 1; i < count; j = i++) {
        const yi = ys[i]!;
        const yj = ys[j]!;
        if (yi > y !== yj > y) scratch[nx++] = xs[i]! + ((y - yi) / (yj - yi)) * (xs[j]! - xs[i]!);
      }
      // Insertion sort: a handful of crossings.
      for (let i = 1; i < nx; i++) {
        const v = scratch[i]!;
        let k = i - 1;
        while (k >= 0 && scratch[k]! > v) {
          scratch[k + 1] = scratch[k]!;
          k--;
        }
        scratch[k + 1] = v;
      }
      for (let k = 0; k + 1 < nx; k += 2) {
        const xa = scratch[k]!;
        const xb = scratch[k + 1]!;
        // Pixel column c covers [c - 0.5, c + 0.5].
        const c0 = Math.max(0, Math.floor(xa + 0.5));
        const c1 = Math.min(m - 1, Math.floor(xb + 0.5));
        for (let c = c0; c <= c1; c++) {
          const cov = Math.min(xb, c + 0.5) - Math.max(xa, c - 0.5);
          if (cov > 0) {
            const o = row * m + c;
            const v = mask[o]! + cov / SUB;
            mask[o] = v > 1 ? 1 : v;
          }
        }
      }
    }
  }
}

/** Distance between landmarks i and j. */
export function dist(p: Points, i: number, j: number): number {
  return Math.hypot(p[2 * i]! - p[2 * j]!, p[2 * i + 1]! - p[2 * j + 1]!);
}

/** Eye openness (mean lid gap / eye width) of the eye whose 6 landmarks start at `e` (36 or 42). */
export function eyeOpenness(p: Points, e: number): number {
  const w = dist(p, e, e + 3);
  return w > 0 ? (dist(p, e + 1, e + 5) + dist(p, e + 2, e + 4)) / (2 * w) : 0;
}

/** Mouth openness: mean inner-lip gap / inner mouth width. */
export function mouthOpenness(p: Points): number {
  const w = dist(p, 60, 64);
  return w > 0 ? (dist(p, 61, 67) + dist(p, 62, 66) + dist(p, 63, 65)) / (3 * w) : 0;
}

/** A face frame: origin between the eye centres, x along the eye line, y perpendicular (down), and face sizes. */
export interface FaceFrame {
  ox: number;
  oy: number;
  /** Unit x axis (left eye centre -> right eye centre, in image terms). */
  ux: number;
  uy: number;
  /** Jaw width |p16 - p0|. */
  width: number;
  /** Eye line to chin (p8) along the face's y axis. */
  height: number;
  /** Distance between the eye centres. */
  iod: number;
}

export function faceFrame(p: Points, out: FaceFrame): FaceFrame {
  let lx = 0,
    ly = 0,
    rx = 0,
    ry = 0;
  for (let i = 36; i < 42; i++) {
    lx += p[2 * i]!;
    ly += p[2 * i + 1]!;
    rx += p[2 * (i + 6)]!;
    ry += p[2 * (i + 6) + 1]!;
  }
  lx /= 6;
  ly /= 6;
  rx /= 6;
  ry /= 6;
  const iod = Math.hypot(rx - lx, ry - ly) || 1;
  out.ox = (lx + rx) / 2;
  out.oy = (ly + ry) / 2;
  out.ux = (rx - lx) / iod;
  out.uy = (ry - ly) / iod;
  out.iod = iod;
  out.width = dist(p, 0, 16) || iod * 2;
  // y axis = x axis rotated +90 degrees (image y down): (-uy, ux).
  const h = (p[16]! - out.ox) * -out.uy + (p[17]! - out.oy) * out.ux;
  out.height = h > 0.2 * iod ? h : iod * 1.3;
  return out;
}

/**
 * Generic depth of the 68 iBUG landmarks (towards the camera), in units of the jaw width. Hand-made from the
 * proportions of an average adult face; only differences matter (yaw/pitch are fitted and applied with the same
 * table, so its scale cancels out between the performer and the portrait).
 */
export const GENERIC_DEPTH = new Float32Array([
  // jaw 0-16
  -0.45, -0.42, -0.36, -0.28, -0.18, -0.08, 0.0, 0.06, 0.08, 0.06, 0.0, -0.08, -0.18, -0.28, -0.36, -0.42, -0.45,
  // brows 17-26
  -0.05, 0.02, 0.06, 0.08, 0.09, 0.09, 0.08, 0.06, 0.02, -0.05,
  // nose 27-35
  0.1, 0.15, 0.2, 0.26, 0.12, 0.16, 0.18, 0.16, 0.12,
  // eyes 36-47
  -0.02, 0.03, 0.04, 0.04, 0.03, 0.02, 0.04, 0.04, 0.03, -0.02, 0.02, 0.03,
  // outer lips 48-59
  0.05, 0.1, 0.14, 0.15, 0.14, 0.1, 0.05, 0.1, 0.13, 0.14, 0.13, 0.1,
  // inner lips 60-67
  0.06, 0.12, 0.13, 0.12, 0.06, 0.12, 0.13, 0.12,
]);

/** Landmarks that move little with expression: used for alignment and for the yaw/pitch fit. */
export const RIGID_POINTS: readonly number[] = [
  0, 1, 2, 3, 13, 14, 15, 16, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45,
];

/**
 * Least-squares affine map of `count` points of `src` onto `dst` starting at point `from` (packed x, y): writes
 * x' = m0 x + m1 y + m2, y' = m3 x + m4 y + m5 into `out`. Exact when the points moved by an affine map.
 */
export function fitAffine(
  src: ArrayLike<number>,
  dst: ArrayLike<number>,
  from: number,
  count: number,
  out: Float64Array,
): Float64Array {
  let sx = 0,
    sy = 0;
  for (let i = from; i < from + count; i++) {
    sx += src[2 * i]!;
    sy += src[2 * i + 1]!;
  }
  sx /= count;
  sy /= count;
  // Centred normal equations: [sxx sxy; sxy syy] [m0 m1]^T = [sxX syX]^T, and the same for y'.
  let sxx = 0,
    sxy = 0,
    syy = 0,
    tX = 0,
    tY = 0;
  let xX = 0,
    yX = 0,
    xY = 0,
    yY = 0;
  for (let i = from; i < from + count; i++) {
    tX += dst[2 * i]!;
    tY += dst[2 * i + 1]!;
  }
  tX /= count;
  tY /= count;
  for (let i = from; i < from + count; i++) {
    const x = src[2 * i]! - sx;
    const y = src[2 * i + 1]! - sy;
    const X = dst[2 * i]! - tX;
    const Y = dst[2 * i + 1]! - tY;
    sxx += x * x;
    sxy += x * y;
    syy += y * y;
    xX += x * X;
    yX += y * X;
    xY += x * Y;
    yY += y * Y;
  }
  const det = sxx * syy - sxy * sxy;
  if (!(Math.abs(det) > 1e-12)) {
    out.set([1, 0, tX - sx, 0, 1, tY - sy]);
    return out;
  }
  out[0] = (xX * syy - yX * sxy) / det;
  out[1] = (yX * sxx - xX * sxy) / det;
  out[3] = (xY * syy - yY * sxy) / det;
  out[4] = (yY * sxx - xY * sxy) / det;
  out[2] = tX - out[0] * sx - out[1] * sy;
  out[5] = tY - out[3] * sx - out[4] * sy;
  return out;
}
