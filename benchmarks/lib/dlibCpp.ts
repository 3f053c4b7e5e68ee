/**
 * dlib's own C++ shape predictor as a benchmark baseline: builds benchmarks/dlib/landmarks_bench.cpp once (cached
 * by source hash) and runs it on boxes, returning per-call times and dlib's landmarks for a parity check.
 *
 * Needs g++ and Debian's libdlib-dev (`pkg-config --libs dlib-1`) and libdlib-data (the model).
 */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

import type { Box } from '../../server/vision/types.js';
import { DEFAULT_SHAPE_PREDICTOR_PATH } from '../../server/vision/shapePredictor.js';

const execFileP = promisify(execFile);
const here = path.dirname(new URL(import.meta.url).pathname);
const repoRoot = path.resolve(here, '..', '..');
const SOURCE = path.join(repoRoot, 'benchmarks', 'dlib', 'landmarks_bench.cpp');

/**
 * Linker arguments from `pkg-config --cflags --libs dlib-1`. Debian's dlib-1.pc names some libraries by absolute
 * `.so` paths that only their -dev packages install (libblas.so, liblapack.so); a missing one is replaced by the
 * versioned runtime library beside it (libblas.so.3), which links the same way, or dropped when there is none.
 */
async function dlibFlags(): Promise<string[]> {
  let out: string;
  try {
    ({ stdout: out } = await execFileP('pkg-config', ['--cflags', '--libs', 'dlib-1']));
  } catch (err) {
    throw new Error('pkg-config cannot find dlib-1: install libdlib-dev (apt-get install libdlib-dev)', { cause: err });
  }
  const flags: string[] = [];
  for (const tok of out.trim().split(/\s+/)) {
    if (!tok) continue;
    if (!path.isAbsolute(tok) || existsSync(tok)) {
      flags.push(tok);
      continue;
    }
    const dir = path.dirname(tok);
    const base = path.basename(tok);
    const versioned = existsSync(dir)
      ? readdirSync(dir)
          .filter((f) => f.startsWith(base) && /^(\.\d+)+$/.test(f.slice(base.length)))
          .sort((a, b) => a.length - b.length)
      : [];
    if (versioned[0]) flags.push(path.join(dir, versioned[0]));
  }
  return flags;
}

let building: Promise<string> | undefined;

/**
 * Compiles landmarks_bench.cpp with `g++ -O2` (the flags of the reference timings) unless a binary for the same
 * source and flags is cached in node_modules/.cache/dlib-bench (or the OS temp folder). Returns its path.
 */
export function buildDlibBench(): Promise<string> {
  building ??= build().catch((err: unknown) => {
    building = undefined;
    throw err;
  });
  return building;
}

async function build(): Promise<string> {
  const src = await readFile(SOURCE);
  const flags = await dlibFlags();
  const hash = createHash('sha256').update(src).update('\0-O2\0').update(flags.join(' ')).digest('hex').slice(0, 16);
  let dir = path.join(repoRoot, 'node_modules', '.cache', 'dlib-bench');
  try {
    await mkdir(dir, { recursive: true });
  } catch {
    dir = path.join(os.tmpdir(), 'dlib-bench');
    await mkdir(dir, { recursive: true });
  }
  const bin = path.join(dir, `landmarks_bench-${hash}`);
  if (existsSync(bin)) return bin;
  const tmp = `${bin}.tmp-${process.pid}`;
  try {
    await execFileP('g++', ['-O2', '-o', tmp, SOURCE, ...flags], { maxBuffer: 16 << 20 });
    await rename(tmp, bin);
  } catch (err) {
    await rm(tmp, { force: true });
    const e = err as { stderr?: string; message?: string };
    throw new Error(
      `building ${SOURCE} failed (needs g++ and libdlib-dev): ${(e.stderr ?? e.message ?? '').slice(-2000)}`,
      {
        cause: err,
      },
    );
  }
  return bin;
}

/** Result of {@link runDlibBench}. */
export interface DlibBenchResult {
  /** Every timed call, item-major (item 0's `reps` calls, then item 1's, ...), in ms. */
  msPerCall: number[];
  /** The same times grouped per item. */
  msPerItem: number[][];
  /** Per item: mean thread CPU time per call in ms (robust to other load on a shared machine). */
  cpuMsPerItem: number[];
  /** dlib's landmarks per item: P points [x, y] (integers, may lie outside the image). */
  landmarks: number[][][];
}

interface RawOutput {
  items: { ms: number[]; cpu_ms: number; landmarks: number[][] }[];
}

/**
 * Runs dlib's shape predictor on each (PGM file, box): one untimed warm-up call, then `reps` timed calls per item
 * (std::chrono::steady_clock around each call), in one process with the model loaded once.
 * @param model the .dat file (default: Debian's 68-point model).
 */
export async function runDlibBench(
  items: { pgmPath: string; box: Box }[],
  reps: number,
  model: string = DEFAULT_SHAPE_PREDICTOR_PATH,
): Promise<DlibBenchResult> {
  if (!Number.isInteger(reps) || reps < 1) throw new TypeError('reps must be a positive integer');
  const lines = items.map(({ pgmPath, box }) => {
    const p = path.resolve(pgmPath);
    if (/\s/.test(p)) throw new TypeError(`PGM path must not contain whitespace: ${p}`);
    for (const v of [box.l, box.t, box.r, box.b])
      if (!Number.isInteger(v)) throw new TypeError('box corners must be integers');
    return `${p} ${box.l} ${box.t} ${box.r} ${box.b}\n`;
  });
  const bin = await buildDlibBench();
  const stdout = await new Promise<string>((resolve, reject) => {
    const child = spawn(bin, [model, String(reps)], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(Buffer.concat(out).toString('utf8'));
      else
        reject(new Error(`${path.basename(bin)} exited with ${code}: ${Buffer.concat(err).toString('utf8').trim()}`));
    });
    child.stdin.end(lines.join(''));
  });
  const raw = JSON.parse(stdout) as RawOutput;
  if (raw.items.length !== items.length)
    throw new Error(`dlib bench returned ${raw.items.length} items for ${items.length}`);
  return {
    msPerCall: raw.items.flatMap((it) => it.ms),
    msPerItem: raw.items.map((it) => it.ms),
    cpuMsPerItem: raw.items.map((it) => it.cpu_ms),
    landmarks: raw.items.map((it) => it.landmarks),
  };
}
