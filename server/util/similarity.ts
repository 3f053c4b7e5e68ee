/**
 * Least-squares similarity (rotation, uniform scale and translation) carrying the points `a` onto `b` (x, y pairs):
 * b ≈ [c -s; s c]·a + t. Written into `out` as [c, s, tx, ty]. Returns false when the points of `a` all coincide (no
 * rotation or scale can be read from them); `out` then holds the shift of the means alone ([1, 0, tx, ty]).
 */
export function fitSimilarity(a: ArrayLike<number>, b: ArrayLike<number>, out: Float64Array): boolean {
  if (a.length !== b.length || a.length % 2 || a.length === 0) throw new TypeError('fitSimilarity: point arrays differ in length');
  const n = a.length / 2;
  let ax = 0;
  let ay = 0;
  let bx = 0;
  let by = 0;
  for (let i = 0; i < n; i++) {
    ax += a[2 * i]!;
    ay += a[2 * i + 1]!;
    bx += b[2 * i]!;
    by += b[2 * i + 1]!;
  }
  ax /= n;
  ay /= n;
  bx /= n;
  by /= n;
  let dot = 0;
  let cross = 0;
  let ss = 0;
  for (let i = 0; i < n; i++) {
    const px = a[2 * i]! - ax;
    const py = a[2 * i + 1]! - ay;
    const qx = b[2 * i]! - bx;
    const qy = b[2 * i + 1]! - by;
    dot += px * qx + py * qy;
    cross += px * qy - py * qx;
    ss += px * px + py * py;
  }
  const ok = ss > 1e-12 && Number.isFinite(dot) && Number.isFinite(cross);
  const c = ok ? dot / ss : 1;
  const s = ok ? cross / ss : 0;
  out[0] = c;
  out[1] = s;
  out[2] = bx - (c * ax - s * ay);
  out[3] = by - (s * ax + c * ay);
  return ok;
}
