/**
 * Expression features from the 68 landmarks (iBUG order): eye openness and mouth openness (gaze: gaze.ts).
 * "Left" and "right" are image sides (the eye on the image's left is landmarks 36-41), which is what a portrait
 * driven without mirroring needs.
 */

function dist(p: ArrayLike<number>, a: number, b: number): number {
  return Math.hypot(p[2 * a]! - p[2 * b]!, p[2 * a + 1]! - p[2 * b + 1]!);
}

/**
 * Eye openness: mean of the two lid distances over the corner distance (the "eye aspect ratio"):
 * about 0.25-0.35 open, below 0.1 closed. `first` is 36 (image-left eye) or 42.
 */
export function eyeOpenness(p: ArrayLike<number>, first: 36 | 42): number {
  const w = dist(p, first, first + 3);
  if (!(w > 0)) return 0;
  return (dist(p, first + 1, first + 5) + dist(p, first + 2, first + 4)) / (2 * w);
}

/** Mouth openness: mean inner-lip gap (61-67, 62-66, 63-65) over the mouth width (48-54). 0 closed, ~0.5+ wide open. */
export function mouthOpenness(p: ArrayLike<number>): number {
  const w = dist(p, 48, 54);
  if (!(w > 0)) return 0;
  return (dist(p, 61, 67) + dist(p, 62, 66) + dist(p, 63, 65)) / (3 * w);
}
