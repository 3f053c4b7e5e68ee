/**
 * MediaPipe FaceMesh geometry (pure functions): the 468 mesh points plus the Iris model's eye contours and irises,
 * mapped onto what the rest of the engine speaks (the 68 iBUG points, image-left eye first), and the eye features
 * the mesh measures better than six points per eye can: per-eye openness from the refined lid contours and the iris
 * centre in eye-normalised coordinates.
 *
 * Layout of a tracked mesh (MESH_POINTS x 2, image pixels): 0-467 FaceMesh (with the lid contours replaced by the
 * Iris model's refined ones), 468-472 the image-left eye's iris (centre, then 4 rim points), 473-477 the image-right
 * eye's. "Left" and "right" here are image sides, as everywhere in the engine (the image-left eye is the subject's
 * right eye: MediaPipe's "right" eye, corners 33 and 133).
 */

/** Points of a tracked mesh: 468 face + 2 x 5 iris. */
export const MESH_POINTS = 478;
export const MESH_FACE_POINTS = 468;
/** First iris point (centre) of the image-left and image-right eyes. */
export const IRIS_LEFT = 468;
export const IRIS_RIGHT = 473;

/**
 * 68 iBUG points from the mesh: one mesh index, or two averaged (after Peizhi Yan's MediaPipe-to-dlib
 * correspondence, checked here against dlib on the reference portraits: see tests/vision/mesh.test.ts).
 */
export const MESH_TO_68: readonly (readonly number[])[] = [
  // Jaw 0-16 (image left to right).
  [127],
  [234],
  [93],
  [132, 58],
  [58, 172],
  [136],
  [150],
  [176],
  [152],
  [400],
  [379],
  [365],
  [397, 288],
  [361],
  [323],
  [454],
  [356],
  // Brows 17-21 (image left), 22-26.
  [70],
  [63],
  [105],
  [66],
  [107],
  [336],
  [296],
  [334],
  [293],
  [300],
  // Nose bridge 27-30, nostrils 31-35.
  [168, 6],
  [197, 195],
  [5],
  [4],
  [75],
  [97],
  [2],
  [326],
  [305],
  // Eyes 36-41 (image left: outer corner, upper, upper, inner corner, lower, lower), 42-47.
  [33],
  [160],
  [158],
  [133],
  [153],
  [144],
  [362],
  [385],
  [387],
  [263],
  [373],
  [380],
  // Outer lips 48-59, inner lips 60-67.
  [61],
  [39],
  [37],
  [0],
  [267],
  [269],
  [291],
  [405],
  [314],
  [17],
  [84],
  [181],
  [78],
  [82],
  [13],
  [312],
  [308],
  [317],
  [14],
  [87],
];

/**
 * Eye contours as the Iris model returns them (its first 16 points, per eye, in the same order as these mesh
 * indices): lower lid from the outer to the inner corner (9), then the upper lid (7).
 */
export const EYE_CONTOUR = {
  left: { lower: [33, 7, 163, 144, 145, 153, 154, 155, 133], upper: [246, 161, 160, 159, 158, 157, 173] },
  right: { lower: [263, 249, 390, 373, 374, 380, 381, 382, 362], upper: [466, 388, 387, 386, 385, 384, 398] },
} as const;

/** Writes the 68 iBUG points (x0, y0, ...) of a mesh (x0, y0, ... with at least 468 points). */
export function meshTo68(mesh: ArrayLike<number>, out: Float32Array | Float64Array): void {
  for (let i = 0; i < 68; i++) {
    const src = MESH_TO_68[i]!;
    let x = 0;
    let y = 0;
    for (const j of src) {
      x += mesh[2 * j]!;
      y += mesh[2 * j + 1]!;
    }
    out[2 * i] = x / src.length;
    out[2 * i + 1] = y / src.length;
  }
}

function d(p: ArrayLike<number>, a: number, b: number): number {
  return Math.hypot(p[2 * a]! - p[2 * b]!, p[2 * a + 1]! - p[2 * b + 1]!);
}

/**
 * Eye openness from the lid contours: the mean distance between the upper lid and the lower lid over the middle of
 * the eye (five pairs), over the corner-to-corner width. About 0.25-0.4 open, below ~0.08 closed; the same scale as
 * the six-point eye aspect ratio, with less noise (five pairs from the Iris model's refined contour).
 */
export function meshEyeOpenness(mesh: ArrayLike<number>, eye: 'left' | 'right'): number {
  const c = EYE_CONTOUR[eye];
  const w = d(mesh, c.lower[0], c.lower[8]);
  if (!(w > 0)) return 0;
  let s = 0;
  // Upper point k (0..6) sits above lower point k + 1; the middle five pairs.
  for (let k = 1; k <= 5; k++) s += d(mesh, c.upper[k]!, c.lower[k + 1]!);
  return s / (5 * w);
}

/** Gaze of one eye, eye-normalised (see {@link meshGaze}). */
export interface EyeGaze {
  x: number;
  y: number;
}

/**
 * The iris centre relative to the eye's corner midpoint, in the eye's own frame (x along the corner-to-corner axis
 * towards image right, y across it, down): x over the eye's half-width, y over 0.3 x its half-width (a typical open
 * eye's half-height, so that x and y are on the scale FaceTrack.gaze documents, without the noise of dividing by the
 * opening itself, which shrinks in a squint).
 */
export function meshEyeGaze(mesh: ArrayLike<number>, eye: 'left' | 'right', out: EyeGaze): EyeGaze {
  const c = EYE_CONTOUR[eye];
  const iris = eye === 'left' ? IRIS_LEFT : IRIS_RIGHT;
  let ax = mesh[2 * c.lower[0]]!;
  let ay = mesh[2 * c.lower[0] + 1]!;
  let bx = mesh[2 * c.lower[8]]!;
  let by = mesh[2 * c.lower[8] + 1]!;
  if (ax > bx) [ax, ay, bx, by] = [bx, by, ax, ay];
  const ux = bx - ax;
  const uy = by - ay;
  const hw = Math.hypot(ux, uy) / 2;
  out.x = 0;
  out.y = 0;
  if (!(hw > 0)) return out;
  const dx = mesh[2 * iris]! - (ax + bx) / 2;
  const dy = mesh[2 * iris + 1]! - (ay + by) / 2;
  out.x = (dx * ux + dy * uy) / (2 * hw * hw);
  out.y = (-dx * uy + dy * ux) / (2 * hw * 0.3 * hw);
  return out;
}

/** Iris radius of one eye in pixels: the mean distance from its centre to its four rim points. */
export function meshIrisRadius(mesh: ArrayLike<number>, eye: 'left' | 'right'): number {
  const c = eye === 'left' ? IRIS_LEFT : IRIS_RIGHT;
  let s = 0;
  for (let k = 1; k <= 4; k++) s += d(mesh, c, c + k);
  return s / 4;
}
