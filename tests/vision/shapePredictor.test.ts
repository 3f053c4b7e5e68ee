/**
 * The dlib 68-point shape predictor port against dlib's own output ($AVATAR_TEST_DATA/reference, FORMAT.md §8):
 * landmarks and leaf choices must match exactly (max abs diff 0).
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';

import { beforeAll, describe, expect, it } from 'vitest';

import { AppError, InvalidStateError, ModelPackError } from '../../server/errors.js';
import { DlibFormatError, DlibReader } from '../../server/vision/dlibFormat.js';
import { decodePgm, encodePgm, readPgm, writePgm } from '../../server/vision/pgm.js';
import {
  DEFAULT_SHAPE_PREDICTOR_PATH,
  ShapePredictor,
  parseShapePredictor,
  type ShapePredictorData,
} from '../../server/vision/shapePredictor.js';
import type { Box } from '../../server/vision/types.js';
import type { GrayImage } from '../../server/types/image.js';
import { referenceMissing, refDir } from './helpers.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..', '..');
const noRef = referenceMissing('the dlib parity tests of shapePredictor.test.ts');

interface Case {
  image: string;
  box: Box;
  landmarks: number[][];
}

function toBox(b: number[]): Box {
  const [l, t, r, bottom] = b as [number, number, number, number];
  return { l, t, r, b: bottom };
}

function jsonl<T>(name: string): T[] {
  return readFileSync(path.join(refDir, name), 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as T);
}

const images = new Map<string, GrayImage>();
async function image(rel: string): Promise<GrayImage> {
  let img = images.get(rel);
  if (!img) {
    img = await readPgm(path.join(refDir, rel));
    images.set(rel, img);
  }
  return img;
}

/** How many scratch slots of the shared model memory are taken (by live instances in any thread). */
function takenSlots(data: ShapePredictorData): number {
  if (!data.memory) throw new Error('the model is not in shared WebAssembly memory');
  return new Int32Array(data.memory.buffer, data.scratchOffset, data.scratchSlots).reduce((n, f) => n + f, 0);
}

/** Max |dlib - ours| over all coordinates of all cases, predicting with `sp`. */
async function maxDiff(sp: ShapePredictor, cases: Case[]): Promise<number> {
  const out = new Int32Array(136);
  let worst = 0;
  for (const c of cases) {
    sp.predict(await image(c.image), c.box, out);
    expect(c.landmarks).toHaveLength(68);
    c.landmarks.forEach(([x, y], i) => {
      worst = Math.max(worst, Math.abs(x! - out[2 * i]!), Math.abs(y! - out[2 * i + 1]!));
    });
  }
  return worst;
}

let sp: ShapePredictor;
let detectorCases: Case[];
let stressCases: Case[];

beforeAll(async () => {
  if (!existsSync(DEFAULT_SHAPE_PREDICTOR_PATH)) {
    throw new Error(`dlib model not found at ${DEFAULT_SHAPE_PREDICTOR_PATH}: apt-get install libdlib-data`);
  }
  sp = await ShapePredictor.load();
  if (noRef) return;
  detectorCases = jsonl<{ image: string; faces: { box: number[]; landmarks: number[][] }[] }>(
    'dlib_landmarks.jsonl',
  ).flatMap((line) => line.faces.map((f) => ({ image: line.image, box: toBox(f.box), landmarks: f.landmarks })));
  stressCases = jsonl<{ image: string; box: number[]; landmarks: number[][] }>('dlib_boxes_stress.jsonl').map((l) => ({
    image: l.image,
    box: toBox(l.box),
    landmarks: l.landmarks,
  }));
});

describe('dlib serialization primitives', () => {
  it('decodes integers and floats as FORMAT.md §1 describes', () => {
    const r = new DlibReader(Uint8Array.from([0x01, 0x00, 0x01, 0x01, 0x02, 0xf4, 0x01, 0x81, 0x88, 0x81, 0x01]));
    expect([r.long(), r.long(), r.long(), r.long(), r.long()]).toEqual([0, 1, 500, -136, -1]);
    r.expectEnd();
    const f = new DlibReader(Uint8Array.from([0x03, 0x4d, 0x38, 0xf1, 0x81, 0x1d]));
    expect(f.real()).toBe(0.029445791617035866);
    const out = new Float32Array(3);
    const floats = [0x03, 0x4d, 0x38, 0xf1, 0x81, 0x1d, 0x01, 0x01, 0x81, 0x64, 0x01, 0x01, 0x82, 0x82, 0x00];
    new DlibReader(Uint8Array.from(floats)).floats(out, 0, 3);
    expect(Array.from(out)).toEqual([Math.fround(0.029445791617035866), 2 ** -100, 2 ** -130]);
  });

  it('rejects malformed integers', () => {
    expect(() => new DlibReader(Uint8Array.from([0x00])).long()).toThrow(DlibFormatError);
    expect(() => new DlibReader(Uint8Array.from([0x81, 0x01])).ulong()).toThrow(/unsigned/);
    expect(() => new DlibReader(Uint8Array.from([0x05, 1, 2, 3, 4, 5])).int32()).toThrow(DlibFormatError);
    expect(() => new DlibReader(Uint8Array.from([0x02, 0x01])).long()).toThrow(/end of data/);
    expect(() => new DlibReader(Uint8Array.from([0x01, 0x01, 0x00])).expectEnd()).toThrow(/trailing/);
  });
});

describe('ShapePredictor against dlib 19.24', () => {
  it('parses the Debian model with the documented sizes', () => {
    const d = sp.toShared();
    expect([d.parts, d.cascades, d.treesPerCascade, d.splitsPerTree, d.featuresPerCascade]).toEqual([
      68, 15, 500, 15, 500,
    ]);
    expect(sp.treeCount).toBe(7500);
    expect(d.leaves.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(d.thresholds.buffer).toBeInstanceOf(SharedArrayBuffer);
  });

  it('load() parses once per path and shares the promise between concurrent callers', async () => {
    const [a, b] = await Promise.all([ShapePredictor.load(), ShapePredictor.load(DEFAULT_SHAPE_PREDICTOR_PATH)]);
    expect(a).toBe(sp);
    expect(b).toBe(sp);
  });

  it.skipIf(noRef)(
    'close() is idempotent, frees the scratch slot, and load() then gives a fresh instance of the same parse',
    async () => {
      // A relative spelling of the same path shares the same parse and instance.
      const first = await ShapePredictor.load(path.relative(process.cwd(), DEFAULT_SHAPE_PREDICTOR_PATH));
      expect(first).toBe(sp);
      const before = takenSlots(sp.toShared());
      // More instances than the pool has slots, one after another: each close() gives its slot back.
      for (let i = 0; i < sp.toShared().scratchSlots + 10; i++) {
        const tmp = ShapePredictor.fromShared(sp.toShared());
        expect(tmp.simd).toBe(true);
        expect(takenSlots(sp.toShared())).toBe(before + 1);
        tmp.close();
        tmp.close();
        expect(tmp.closed).toBe(true);
      }
      expect(takenSlots(sp.toShared())).toBe(before);
      const c = detectorCases[0]!;
      const closed = ShapePredictor.fromShared(sp.toShared());
      closed.close();
      expect(() => closed.predict(images.get(c.image) ?? (undefined as never), c.box, new Int32Array(136))).toThrow(
        InvalidStateError,
      );
      sp.close();
      const again = await ShapePredictor.load();
      expect(again).not.toBe(sp);
      expect(again.toShared()).toBe(sp.toShared());
      sp = again;
      expect(await maxDiff(sp, detectorCases.slice(0, 4))).toBe(0);
    },
  );

  it.skipIf(noRef)('matches every detector face of dlib_landmarks.jsonl (both upsample settings)', async () => {
    expect(detectorCases).toHaveLength(45);
    expect(await maxDiff(sp, detectorCases)).toBe(0);
  });

  it.skipIf(noRef)('matches all 200 stress boxes (tiny, degenerate, inverted, outside, 100,000 px)', async () => {
    expect(stressCases).toHaveLength(200);
    expect(await maxDiff(sp, stressCases)).toBe(0);
  });

  it.skipIf(noRef)('reaches the same leaf as dlib in all 7,500 trees of the sampled faces', async () => {
    const lines = jsonl<{ image: string; box: number[]; landmarks: number[][]; leaf_feats: number[] }>(
      'dlib_leaves_sample.jsonl',
    );
    expect(lines).toHaveLength(3);
    const out = new Int32Array(136);
    const leaves = new Int32Array(sp.treeCount);
    for (const l of lines) {
      sp.predict(await image(l.image), toBox(l.box), out, leaves);
      expect(l.leaf_feats).toHaveLength(7500);
      let mismatches = 0;
      l.leaf_feats.forEach((v, k) => {
        if (v - 16 * k !== leaves[k]) mismatches++;
      });
      expect(mismatches).toBe(0);
      expect(Array.from(out)).toEqual(l.landmarks.flat());
    }
  });

  it.skipIf(noRef)('predictFloat gives the positions that predict rounds', async () => {
    const ints = new Int32Array(136);
    const floats = new Float32Array(136);
    for (const c of detectorCases) {
      const img = await image(c.image);
      sp.predict(img, c.box, ints);
      sp.predictFloat(img, c.box, floats);
      for (let j = 0; j < 136; j++) expect(Math.abs(floats[j]! - ints[j]!)).toBeLessThanOrEqual(0.5 + 1e-3);
    }
  });

  it.skipIf(noRef)('the TypeScript leaf loop gives the same results as the SIMD kernel', async () => {
    const plain = ShapePredictor.fromShared(sp.toShared(), { simd: false });
    expect(plain.simd).toBe(false);
    expect(await maxDiff(plain, detectorCases)).toBe(0);
    expect(await maxDiff(plain, stressCases.slice(0, 60))).toBe(0);
  });

  it.skipIf(noRef)('rejects bad arguments', async () => {
    const img = await image(detectorCases[0]!.image);
    const box = detectorCases[0]!.box;
    expect(() => sp.predict(img, box, new Int32Array(10))).toThrow(TypeError);
    expect(() => sp.predict(img, box, new Int32Array(136), new Int32Array(10))).toThrow(TypeError);
    expect(() => sp.predict({ width: 640, height: 480, data: new Uint8Array(10) }, box, new Int32Array(136))).toThrow(
      TypeError,
    );
    expect(() => sp.predict(img, { ...box, r: NaN }, new Int32Array(136))).toThrow(TypeError);
  });
});

/** dlib's integer encoding (FORMAT.md §1.1). */
function encInt(v: number): number[] {
  const bytes: number[] = [];
  for (let a = Math.abs(v); a > 0; a = Math.floor(a / 256)) bytes.push(a % 256);
  if (bytes.length === 0) bytes.push(0);
  return [bytes.length | (v < 0 ? 0x80 : 0), ...bytes];
}

/**
 * A small random dlib shape_predictor stream: `parts` landmarks, 2 cascades of `trees` trees of depth 2, with
 * float values m * 2^e written in dlib's (mantissa, exponent) encoding.
 */
function syntheticModel(parts: number, trees: number, features: number, seed: number): Uint8Array {
  let state = seed;
  const rand = (): number => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
  const float = (lo: number, hi: number): number[] => {
    const m = Math.round((lo + (hi - lo) * rand()) * 2 ** 20);
    return [...encInt(m), ...encInt(-20)];
  };
  const column = (n: number, lo: number, hi: number): number[] => [
    ...encInt(-n),
    ...encInt(-1),
    ...Array.from({ length: n }, () => float(lo, hi)).flat(),
  ];
  const out: number[] = [...encInt(1), ...column(2 * parts, 0.2, 0.8), ...encInt(2)];
  for (let c = 0; c < 2; c++) {
    out.push(...encInt(trees));
    for (let t = 0; t < trees; t++) {
      out.push(...encInt(3));
      for (let n = 0; n < 3; n++) {
        out.push(...encInt(Math.floor(rand() * features)), ...encInt(Math.floor(rand() * features)), ...float(-40, 40));
      }
      out.push(...encInt(4));
      for (let l = 0; l < 4; l++) out.push(...column(2 * parts, -0.05, 0.05));
    }
  }
  out.push(...encInt(2));
  for (let c = 0; c < 2; c++) {
    out.push(...encInt(features));
    for (let i = 0; i < features; i++) out.push(...encInt(Math.floor(rand() * parts)));
  }
  out.push(...encInt(2));
  for (let c = 0; c < 2; c++) {
    out.push(...encInt(features));
    for (let i = 0; i < features; i++) out.push(...float(-0.2, 0.2), ...float(-0.2, 0.2));
  }
  return Uint8Array.from(out);
}

describe('other dlib shape_predictor models', () => {
  // Input image only (a reference frame), no dlib output involved.
  it.skipIf(noRef)(
    'any tree count and landmark count: the SIMD kernel (groups of 4 leaves + tail, padded lanes) equals the TypeScript loop',
    async () => {
      const img = await image('frames/portrait-painting_mona_lisa.pgm');
      const boxes: Box[] = [
        { l: 277, t: 93, r: 349, b: 165 },
        { l: 100, t: 50, r: 500, b: 420 },
        { l: -50, t: -20, r: 60, b: 90 },
      ];
      for (const [parts, trees] of [
        [5, 3],
        [5, 9],
        [3, 4],
        [68, 6],
      ] as const) {
        const simd = ShapePredictor.fromBuffer(syntheticModel(parts, trees, 20, parts * 100 + trees));
        const plain = ShapePredictor.fromShared(simd.toShared(), { simd: false });
        expect(simd.simd).toBe(true);
        expect([simd.parts, simd.treeCount, simd.toShared().leafStride]).toEqual([
          parts,
          2 * trees,
          (2 * parts + 3) & ~3,
        ]);
        const a = new Float32Array(2 * parts);
        const b = new Float32Array(2 * parts);
        const la = new Int32Array(simd.treeCount);
        const lb = new Int32Array(simd.treeCount);
        for (const box of boxes) {
          simd.predictFloat(img, box, a, la);
          plain.predictFloat(img, box, b, lb);
          expect(Array.from(a)).toEqual(Array.from(b));
          expect(Array.from(la)).toEqual(Array.from(lb));
        }
        // Different boxes reach different leaves: the comparison is not vacuous.
        simd.predictFloat(img, boxes[0]!, a);
        simd.predictFloat(img, boxes[1]!, b);
        expect(Array.from(a)).not.toEqual(Array.from(b));
        simd.close();
      }
    },
  );
});

describe('model file errors', () => {
  it('a missing file names the file and the Debian package', async () => {
    const missing = path.join(os.tmpdir(), `no-such-model-${process.pid}.dat`);
    const err = await ShapePredictor.load(missing).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelPackError);
    expect((err as AppError).code).toBe('MODEL_PACK_INVALID');
    expect((err as Error).message).toContain(missing);
    expect((err as Error).message).toContain('apt-get install libdlib-data');
  });

  it('a truncated file is refused with the file name, and the failure is not cached', async () => {
    const full = await readFile(DEFAULT_SHAPE_PREDICTOR_PATH);
    const truncated = path.join(os.tmpdir(), `truncated-sp-${process.pid}.dat`);
    await writeFile(truncated, full.subarray(0, 5_000_000));
    try {
      const err = await ShapePredictor.load(truncated).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ModelPackError);
      expect((err as Error).message).toContain(truncated);
      expect((err as Error).message).toMatch(
        /not a valid dlib shape_predictor file: 7500 trees .* cannot fit in the file/,
      );
      // A later call retries (and fails the same way) instead of returning a cached rejection forever.
      await writeFile(truncated, Buffer.from([0x01, 0x02]));
      await expect(ShapePredictor.load(truncated)).rejects.toThrow(/version 2|invalid|end of data/);
    } finally {
      await rm(truncated, { force: true });
    }
  });

  it('trailing bytes, a file cut near its end and a wrong version are refused', async () => {
    const full = await readFile(DEFAULT_SHAPE_PREDICTOR_PATH);
    expect(() => parseShapePredictor(Buffer.concat([full, Buffer.from([0])]))).toThrow(/trailing bytes/);
    expect(() => parseShapePredictor(full.subarray(0, full.length - 1000))).toThrow(/unexpected end of data/);
    const v2 = Buffer.from(full.subarray(0, 100));
    v2[1] = 2;
    expect(() => parseShapePredictor(v2)).toThrow(/version 2/);
  });
});

describe('sharing the model with worker threads', () => {
  it.skipIf(noRef)('fromShared(toShared()) predicts identically in the same thread', async () => {
    const copy = ShapePredictor.fromShared(sp.toShared());
    expect(copy.toShared().leaves.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(await maxDiff(copy, stressCases)).toBe(0);
    copy.close();
  });

  it.skipIf(noRef)('a worker_threads Worker gets the model by postMessage and predicts identically', async () => {
    const cases = [...detectorCases.slice(0, 8), ...stressCases.slice(0, 40)];
    const imgs = [...new Set(cases.map((c) => c.image))];
    const payload = {
      data: sp.toShared(),
      images: await Promise.all(imgs.map(async (name) => image(name))),
      cases: cases.map((c) => ({ image: imgs.indexOf(c.image), box: c.box })),
    };
    // The worker loads the TypeScript module through tsx's require hook (Node 20 workers take no --import hooks).
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      const { ShapePredictor } = require(workerData.tsx).require(workerData.module, workerData.parent);
      parentPort.once('message', ({ data, images, cases }) => {
        const sp = ShapePredictor.fromShared(data);
        const out = new Int32Array(136 * cases.length);
        for (let i = 0; i < cases.length; i++) {
          sp.predict(images[cases[i].image], cases[i].box, out.subarray(136 * i, 136 * (i + 1)));
        }
        const simd = sp.simd;
        sp.close();
        parentPort.postMessage({ out, simd, shared: data.leaves.buffer instanceof SharedArrayBuffer });
      });
      parentPort.postMessage('ready');
    `;
    const slotsBefore = takenSlots(sp.toShared());
    const worker = new Worker(code, {
      eval: true,
      workerData: {
        tsx: createRequire(import.meta.url).resolve('tsx/cjs/api'),
        module: path.join(repoRoot, 'server', 'vision', 'shapePredictor.ts'),
        parent: fileURLToPath(import.meta.url),
      },
    });
    try {
      const reply = await new Promise<{ out: Int32Array; simd: boolean; shared: boolean }>((resolve, reject) => {
        worker.on('error', reject);
        worker.on('exit', (code) => reject(new Error(`worker exited with ${code}`)));
        worker.on('message', (msg: unknown) => {
          if (msg === 'ready') worker.postMessage(payload satisfies { data: ShapePredictorData });
          else resolve(msg as { out: Int32Array; simd: boolean; shared: boolean });
        });
      });
      expect(reply.shared).toBe(true);
      // The worker's instance took a slot in the shared memory and gave it back on close().
      expect(takenSlots(sp.toShared())).toBe(slotsBefore);
      expect(reply.simd).toBe(sp.simd);
      const expected = new Int32Array(136 * cases.length);
      for (let i = 0; i < cases.length; i++) {
        sp.predict(await image(cases[i]!.image), cases[i]!.box, expected.subarray(136 * i, 136 * (i + 1)));
      }
      expect(Array.from(reply.out)).toEqual(Array.from(expected));
      expect(Array.from(expected.subarray(0, 136))).toEqual(cases[0]!.landmarks.flat());
    } finally {
      await worker.terminate();
    }
  });
});

describe('PGM', () => {
  it.skipIf(noRef)('round-trips and reads the reference frames', async () => {
    const img = await image('frames/portrait-painting_mona_lisa.pgm');
    expect([img.width, img.height, img.data.length]).toEqual([640, 480, 640 * 480]);
    const file = path.join(os.tmpdir(), `pgm-${process.pid}.pgm`);
    try {
      await writePgm(file, img);
      const back = await readPgm(file);
      expect(Buffer.compare(Buffer.from(back.data), Buffer.from(img.data))).toBe(0);
    } finally {
      await rm(file, { force: true });
    }
    const withComment = decodePgm(Buffer.from('P5\n# made by hand\n2 1\n255\n\x07\x09', 'latin1'));
    expect([withComment.width, withComment.height, ...withComment.data]).toEqual([2, 1, 7, 9]);
    expect(encodePgm(withComment).toString('latin1')).toBe('P5\n2 1\n255\n\x07\x09');
  });

  it('refuses other formats and truncated data', () => {
    expect(() => decodePgm(Buffer.from('P6\n2 1\n255\n123456', 'latin1'))).toThrow(AppError);
    expect(() => decodePgm(Buffer.from('P5\n2 1\n65535\n1234', 'latin1'))).toThrow(/8-bit/);
    expect(() => decodePgm(Buffer.from('P5\n2 2\n255\n\x01', 'latin1'))).toThrow(/truncated/);
  });
});
