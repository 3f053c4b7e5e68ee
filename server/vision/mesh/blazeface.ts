/**
 * BlazeFace output decoding (pure): anchors, boxes, the six keypoints (eyes, nose, mouth, ears) and non-maximum
 * suppression, for the 256 x 256 "back" model `@vladmandic/human` ships (strides 16 and 32 with 2 and 6 anchors a
 * cell: 896 anchors; per anchor a score logit, the box centre offset and size, and 6 keypoint offsets, in input
 * pixels relative to the anchor centre).
 */

/** A detected face in input-tensor pixels. */
export interface BlazeDetection {
  score: number;
  /** Box centre and size. */
  cx: number;
  cy: number;
  w: number;
  h: number;
  /** 6 keypoints x (x, y): image-left eye, image-right eye, nose, mouth, image-left ear, image-right ear. */
  keypoints: Float32Array;
}

/** Anchor centres (x, y per anchor) for a square input of `size` pixels. */
export function blazeAnchors(size: number): Float32Array {
  const spec = [
    { stride: size / 16, n: 2 },
    { stride: size / 8, n: 6 },
  ];
  const out: number[] = [];
  for (const { stride, n } of spec) {
    const cells = Math.ceil(size / stride);
    for (let y = 0; y < cells; y++)
      for (let x = 0; x < cells; x++) for (let k = 0; k < n; k++) out.push(stride * (x + 0.5), stride * (y + 0.5));
  }
  return Float32Array.from(out);
}

function sigmoid(v: number): number {
  return 1 / (1 + Math.exp(-v));
}

function iou(a: BlazeDetection, b: BlazeDetection): number {
  const ix = Math.max(0, Math.min(a.cx + a.w / 2, b.cx + b.w / 2) - Math.max(a.cx - a.w / 2, b.cx - b.w / 2));
  const iy = Math.max(0, Math.min(a.cy + a.h / 2, b.cy + b.h / 2) - Math.max(a.cy - a.h / 2, b.cy - b.h / 2));
  const i = ix * iy;
  const u = a.w * a.h + b.w * b.h - i;
  return u > 0 ? i / u : 0;
}

/**
 * Faces above `minScore` from the raw rows (896 x 17: logit, then 16 regressors), best first, overlapping ones
 * (IoU > `maxIou`) suppressed.
 */
export function decodeBlazeFace(
  rows: Float32Array,
  anchors: Float32Array,
  minScore = 0.5,
  maxIou = 0.3,
): BlazeDetection[] {
  const n = anchors.length / 2;
  if (rows.length !== n * 17) throw new TypeError(`BlazeFace: expected ${n} x 17 outputs, got ${rows.length}`);
  const found: BlazeDetection[] = [];
  const minLogit = Math.log(minScore / (1 - minScore));
  for (let i = 0; i < n; i++) {
    const o = 17 * i;
    const logit = rows[o]!;
    if (!(logit > minLogit)) continue;
    const ax = anchors[2 * i]!;
    const ay = anchors[2 * i + 1]!;
    const kp = new Float32Array(12);
    for (let k = 0; k < 6; k++) {
      kp[2 * k] = ax + rows[o + 5 + 2 * k]!;
      kp[2 * k + 1] = ay + rows[o + 6 + 2 * k]!;
    }
    found.push({
      score: sigmoid(logit),
      cx: ax + rows[o + 1]!,
      cy: ay + rows[o + 2]!,
      w: rows[o + 3]!,
      h: rows[o + 4]!,
      keypoints: kp,
    });
  }
  found.sort((a, b) => b.score - a.score);
  const kept: BlazeDetection[] = [];
  for (const f of found) if (!kept.some((k) => iou(k, f) > maxIou)) kept.push(f);
  return kept;
}

/**
 * Gathers the detector's outputs into one [896 x 17] row array: the model returns either one tensor or four (scores
 * and regressors of the 512 stride-16 anchors and of the 384 stride-32 anchors).
 */
export function gatherBlazeRows(outputs: readonly Float32Array[], anchors: number, out: Float32Array): Float32Array {
  if (outputs.length === 1) {
    out.set(outputs[0]!.subarray(0, anchors * 17));
    return out;
  }
  if (outputs.length !== 4) throw new TypeError(`BlazeFace: expected 1 or 4 outputs, got ${outputs.length}`);
  // Four parts, sorted by size: [384 scores, 512 scores, 384 x 16 regressors, 512 x 16]; stride 16 (512) first.
  const [s384, s512, r384, r512] = [...outputs].sort((a, b) => a.length - b.length) as [
    Float32Array,
    Float32Array,
    Float32Array,
    Float32Array,
  ];
  let row = 0;
  for (const [s, r] of [
    [s512, r512],
    [s384, r384],
  ] as const) {
    for (let i = 0; i < s.length; i++, row++) {
      out[17 * row] = s[i]!;
      out.set(r.subarray(16 * i, 16 * i + 16), 17 * row + 1);
    }
  }
  if (row !== anchors) throw new TypeError(`BlazeFace: outputs hold ${row} anchors, expected ${anchors}`);
  return out;
}
