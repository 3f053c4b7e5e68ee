/**
 * The TypeScript shape predictor against dlib's C++ one on the same boxes, with a parity check.
 *
 *   npx tsx benchmarks/dlib/landmarks.ts [--reps N] [--rounds R]
 *
 * Boxes: every detector face of $AVATAR_TEST_DATA/reference/dlib_landmarks.jsonl (45 boxes, 640x480 frames). Each round
 * times REPS calls per box in TypeScript and then in dlib C++ (g++ -O2, benchmarks/dlib/landmarks_bench.cpp); the
 * rounds alternate so that both sides see the same machine load. Writes benchmarks/results/dlib-landmarks.json with
 * p50/p95 per call, the parse time, and the parity (max abs landmark difference, which must be 0).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import {
  ShapePredictor,
  parseShapePredictor,
  DEFAULT_SHAPE_PREDICTOR_PATH,
} from '../../server/vision/shapePredictor.js';
import { readPgm } from '../../server/vision/pgm.js';
import type { Box } from '../../server/vision/types.js';
import type { GrayImage } from '../../server/types/image.js';
import { referenceAvailable, referenceDir as refDir } from '../../scripts/testData.js';
import { num, parseOptions } from '../lib/args.js';
import { runDlibBench } from '../lib/dlibCpp.js';
import { summarize, writeResult } from '../lib/stats.js';

/** The flags: `npm run bench -- dlib/landmarks [--reps 20] [--rounds 3]`. */
export const OPTIONS = { reps: num(20, { min: 1, integer: true }), rounds: num(3, { min: 1, integer: true }) };

export async function main(args: string[]): Promise<void> {
  const { reps, rounds } = parseOptions('dlib/landmarks', args, OPTIONS);
  if (!referenceAvailable()) {
    throw new Error(`reference data not found at ${refDir}: this benchmark needs it (see test-data/README.md)`);
  }

  const items: { pgmPath: string; box: Box; img: GrayImage; landmarks: number[][] }[] = [];
  const lines = readFileSync(path.join(refDir, 'dlib_landmarks.jsonl'), 'utf8').trim().split('\n');
  for (const line of lines) {
    const rec = JSON.parse(line) as { image: string; faces: { box: number[]; landmarks: number[][] }[] };
    const pgmPath = path.join(refDir, rec.image);
    const img = await readPgm(pgmPath);
    for (const f of rec.faces) {
      const [l, t, r, b] = f.box as [number, number, number, number];
      items.push({ pgmPath, box: { l, t, r, b }, img, landmarks: f.landmarks });
    }
  }

  const file = readFileSync(DEFAULT_SHAPE_PREDICTOR_PATH);
  const parseMs: number[] = [];
  const parseCpuMs: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    parseShapePredictor(file);
    const cpu = process.cpuUsage(cpu0);
    parseMs.push(performance.now() - t0);
    parseCpuMs.push((cpu.user + cpu.system) / 1000);
  }
  const t0 = performance.now();
  const sp = await ShapePredictor.load();
  const loadMs = performance.now() - t0;

  const out = new Int32Array(136);
  let tsVsRef = 0;
  for (const it of items) {
    sp.predict(it.img, it.box, out);
    it.landmarks.forEach(([x, y], i) => {
      tsVsRef = Math.max(tsVsRef, Math.abs(x! - out[2 * i]!), Math.abs(y! - out[2 * i + 1]!));
    });
  }

  const tsMs: number[] = [];
  const cppMs: number[] = [];
  let tsCpuMs = 0;
  let cppCpuMs = 0;
  let cppVsTs = 0;
  for (let round = 0; round < rounds; round++) {
    const cpu0 = process.cpuUsage();
    for (const it of items) {
      sp.predict(it.img, it.box, out); // untimed warm-up per box, as the C++ side does
      for (let k = 0; k < reps; k++) {
        const a = performance.now();
        sp.predict(it.img, it.box, out);
        tsMs.push(performance.now() - a);
      }
    }
    const cpu = process.cpuUsage(cpu0);
    tsCpuMs += (cpu.user + cpu.system) / 1000;

    const cpp = await runDlibBench(items, reps);
    cppMs.push(...cpp.msPerCall);
    cppCpuMs += cpp.cpuMsPerItem.reduce((a, b) => a + b, 0) / items.length;
    items.forEach((it, n) => {
      sp.predict(it.img, it.box, out);
      cpp.landmarks[n]!.forEach(([x, y], i) => {
        cppVsTs = Math.max(cppVsTs, Math.abs(x! - out[2 * i]!), Math.abs(y! - out[2 * i + 1]!));
      });
    });
  }

  const ts = summarize(tsMs);
  const cpp = summarize(cppMs);
  writeResult('dlib-landmarks', {
    boxes: items.length,
    reps,
    rounds,
    simd: sp.simd,
    parse_ms: summarize(parseMs),
    parse_cpu_ms: summarize(parseCpuMs),
    load_ms: Math.round(loadMs),
    predict_ms_per_face: {
      typescript: ts,
      typescript_cpu_ms_mean: Math.round((tsCpuMs / ((reps + 1) * items.length * rounds)) * 1000) / 1000,
      dlib_cpp_O2: cpp,
      dlib_cpp_O2_cpu_ms_mean: Math.round((cppCpuMs / rounds) * 1000) / 1000,
      ratio_p50: Math.round((ts.p50 / cpp.p50) * 100) / 100,
    },
    parity: { max_abs_diff_vs_reference: tsVsRef, max_abs_diff_vs_dlib_cpp: cppVsTs },
  });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await main(process.argv.slice(2));
}
