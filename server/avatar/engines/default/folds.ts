/**
 * Fold detection for the warp (pure, allocation-free): the sampling grid maps every output node to the source point
 * it reads; where that mapping reverses orientation (its Jacobian determinant is <= 0) the warp folds the picture
 * over itself (a cheek pinched through itself, a veil folded over the face). Both triangles of every grid cell are
 * checked, so a fold one cell wide is seen.
 */

/**
 * The node mask of a paste region: node (u, v) of an M x M grid over the region's pixels (align-corners spacing) is
 * in when the region's paste mask is > 0 at that pixel (outside it the warp is never shown).
 */
export function nodeMask(mask: Float32Array, w: number, h: number, M: number): Uint8Array {
  const out = new Uint8Array(M * M);
  for (let v = 0; v < M; v++) {
    const y = Math.round((v * (h - 1)) / (M - 1));
    for (let u = 0; u < M; u++) {
      const x = Math.round((u * (w - 1)) / (M - 1));
      out[v * M + u] = mask[y * w + x]! > 0 ? 1 : 0;
    }
  }
  return out;
}

/**
 * Cells of a node-resolution sampling grid (planar [2, M, M]: x then y) whose mapping folds: a triangle of the cell
 * with a Jacobian determinant at or below `minDet` (in source units per node squared), counted where all of the
 * cell's nodes are in `mask` (null: everywhere) and none is within one node of `exclude` (> 0; null: nothing left
 * out). 0 means fold-free.
 */
export function countFolds(
  grid: Float32Array,
  M: number,
  mask: Uint8Array | null,
  exclude: Float32Array | null = null,
  minDet = 0,
): number {
  const MM = M * M;
  let folds = 0;
  for (let v = 0; v < M - 1; v++) {
    for (let u = 0; u < M - 1; u++) {
      const n = v * M + u;
      if (mask && !(mask[n] && mask[n + 1] && mask[n + M] && mask[n + M + 1])) continue;
      // Upper-left triangle: (u, v) -> (u + 1, v), (u, v + 1).
      const ax = grid[n + 1]! - grid[n]!;
      const ay = grid[MM + n + 1]! - grid[MM + n]!;
      const bx = grid[n + M]! - grid[n]!;
      const by = grid[MM + n + M]! - grid[MM + n]!;
      // Lower-right triangle: (u + 1, v + 1) -> (u, v + 1), (u + 1, v) (same orientation).
      const cx = grid[n + M]! - grid[n + M + 1]!;
      const cy = grid[MM + n + M]! - grid[MM + n + M + 1]!;
      const dx = grid[n + 1]! - grid[n + M + 1]!;
      const dy = grid[MM + n + 1]! - grid[MM + n + M + 1]!;
      if (ax * by - ay * bx <= minDet || cx * dy - cy * dx <= minDet) {
        if (exclude && near(exclude, M, u, v)) continue;
        folds++;
      }
    }
  }
  return folds;
}

/** Whether any node of cell (u, v) or of its 8 neighbour cells is in `m` (> 0). */
function near(m: Float32Array, M: number, u: number, v: number): boolean {
  for (let y = Math.max(0, v - 1); y <= Math.min(M - 1, v + 2); y++)
    for (let x = Math.max(0, u - 1); x <= Math.min(M - 1, u + 2); x++) if (m[y * M + x]! > 0) return true;
  return false;
}
