/**
 * dlib's shape predictor (an ensemble of regression trees, Kazemi & Sullivan 2014), read from dlib's own .dat
 * file and run so that the result equals dlib 19.24 bit for bit. Rules: ../shared/reference/FORMAT.md §1-§3.
 *
 * The default model is the 68-point iBUG face model that Debian ships in `libdlib-data` (licensed for
 * non-commercial use only). Any dlib shape_predictor file with uniform cascades (same tree count, depth and
 * feature count in every cascade) loads, so the landmark model stays replaceable.
 */
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';

import { InvalidStateError, ModelPackError } from '../errors.js';
import { createLogger } from '../logger.js';
import { DlibFormatError, DlibReader } from './dlibFormat.js';
import type { Box } from './types.js';
import type { GrayImage } from '../types/image.js';

/** Where Debian's `libdlib-data` installs the 68-point face model. */
export const DEFAULT_SHAPE_PREDICTOR_PATH = '/usr/share/dlib/shape_predictor_68_face_landmarks.dat';

const PACK = 'dlib-68';
const log = createLogger('vision.shapePredictor');

/**
 * A parsed model as plain typed arrays over SharedArrayBuffers: structured-clone friendly, so
 * `worker.postMessage(data)` shares the 66 MB with a worker thread instead of copying it.
 */
export interface ShapePredictorData {
  /** Number of landmarks P; shapes have 2P floats x0,y0,x1,y1,... */
  readonly parts: number;
  /** Number of cascades C. */
  readonly cascades: number;
  /** Trees per cascade T. */
  readonly treesPerCascade: number;
  /** Split nodes per tree S (2^depth - 1); leaves per tree are S + 1. */
  readonly splitsPerTree: number;
  /** Feature pixels per cascade F. */
  readonly featuresPerCascade: number;
  /** The mean shape (2P floats, box-normalized coordinates). */
  readonly initialShape: Float32Array;
  /**
   * Per tree k (cascade-major), per split node n, at [kS+n]: the two feature indices packed as
   * `idx1 | idx2 << 16` (read idx2 with `>>> 16`); each < F <= 65536. One load per node in the tree walk.
   */
  readonly splitIdx: Int32Array;
  /** Per tree k, per split node n: the threshold at [kS+n]. */
  readonly thresholds: Float32Array;
  /** Floats per leaf vector: 2P rounded up to a multiple of 4 (zero padded) so the SIMD kernel adds whole lanes. */
  readonly leafStride: number;
  /** Per tree k, per leaf j: 2P floats at [(k(S+1) + j) * leafStride]. */
  readonly leaves: Float32Array;
  /**
   * The shared WebAssembly memory that holds `leaves` (at `leaves.byteOffset`) when the SIMD kernel is available;
   * undefined when the leaves live on a plain SharedArrayBuffer.
   */
  readonly memory?: WebAssembly.Memory | undefined;
  /**
   * With `memory`: the scratch pool in it, one slot per live predictor instance (in any thread). `scratchOffset` is
   * the byte address of `scratchSlots` Int32 claim flags (0 free, 1 taken, changed with Atomics), followed by the
   * slots of `scratchSlotBytes` each. All 0 without `memory`.
   */
  readonly scratchOffset: number;
  readonly scratchSlots: number;
  readonly scratchSlotBytes: number;
  /** Per cascade c, per feature i: the anchor landmark index at [cF+i]. */
  readonly anchors: Uint16Array;
  /** Per cascade c, per feature i: dx at [2(cF+i)], dy at [2(cF+i)+1]. */
  readonly deltas: Float32Array;
}

// Per process (per thread for the instances): the parse of each model file, and the instance load() hands out.
const parses = new Map<string, Promise<ShapePredictorData>>();
const loaded = new Map<string, ShapePredictor>();

function shared<T extends Float32Array | Uint16Array | Int32Array>(
  Ctor: { new (b: SharedArrayBuffer): T; BYTES_PER_ELEMENT: number },
  n: number,
): T {
  return new Ctor(new SharedArrayBuffer(n * Ctor.BYTES_PER_ELEMENT));
}

/**
 * Parses a dlib shape_predictor stream into shared typed arrays (FORMAT.md §2).
 * @throws DlibFormatError on any structural problem, with the byte offset.
 */
export function parseShapePredictor(buf: Uint8Array): ShapePredictorData {
  const r = new DlibReader(buf);
  const version = r.int32();
  if (version !== 1) throw new DlibFormatError(`unsupported shape_predictor version ${version} (expected 1)`, 0);

  let at = r.pos;
  const [nr, nc] = r.matrixDims();
  if (nc !== 1 || nr === 0 || nr % 2 !== 0 || nr > 65536 * 2) {
    throw new DlibFormatError(`initial shape must be a 2Px1 matrix, found ${nr}x${nc}`, at);
  }
  const dims = nr;
  const parts = dims / 2;
  const initialShape = shared(Float32Array, dims);
  for (let i = 0; i < dims; i++) initialShape[i] = r.real();

  at = r.pos;
  const cascades = r.ulong();
  if (cascades === 0 || cascades > 1000) throw new DlibFormatError(`implausible cascade count ${cascades}`, at);

  let trees = -1;
  let splits = -1;
  let splitIdx: Int32Array | undefined;
  let thresholds: Float32Array | undefined;
  let leaves: Float32Array | undefined;
  let leafStorage: LeafStorage | undefined;
  const leafStride = (dims + 3) & ~3;
  let maxFeatIdx = 0;
  for (let c = 0; c < cascades; c++) {
    at = r.pos;
    const t = r.ulong();
    if (trees < 0) {
      if (t === 0 || t > 100_000) throw new DlibFormatError(`implausible tree count ${t}`, at);
      trees = t;
    } else if (t !== trees) {
      throw new DlibFormatError(
        `cascade ${c} has ${t} trees, cascade 0 has ${trees} (non-uniform models are not supported)`,
        at,
      );
    }
    for (let k = 0; k < trees; k++) {
      const tree = c * trees + k;
      at = r.pos;
      const s = r.ulong();
      if (splits < 0) {
        // A complete binary tree: S = 2^depth - 1, at most depth 15 here (far beyond any dlib model).
        if (s === 0 || s > 32767 || ((s + 1) & s) !== 0)
          throw new DlibFormatError(`split count ${s} is not 2^depth - 1`, at);
        splits = s;
        const nTrees = cascades * trees;
        // Every leaf float takes at least 4 bytes in the file: refuse impossible sizes before allocating them.
        if (nTrees * (s + 1) * dims * 4 > buf.length - at) {
          throw new DlibFormatError(`${nTrees} trees of depth ${Math.log2(s + 1)} cannot fit in the file`, at);
        }
        splitIdx = shared(Int32Array, nTrees * s);
        thresholds = shared(Float32Array, nTrees * s);
        leafStorage = allocLeaves(nTrees * (s + 1) * leafStride, leafStride, trees);
        leaves = leafStorage.leaves;
      } else if (s !== splits) {
        throw new DlibFormatError(
          `tree ${tree} has ${s} splits, the first tree has ${splits} (non-uniform models are not supported)`,
          at,
        );
      }
      const si = splitIdx!;
      const th = thresholds!;
      const lv = leaves!;
      let o = tree * splits;
      for (let n = 0; n < splits; n++, o++) {
        at = r.pos;
        const i1 = r.ulong();
        const i2 = r.ulong();
        if (i1 > 65535 || i2 > 65535)
          throw new DlibFormatError(`split feature index ${Math.max(i1, i2)} too large`, at);
        if (i1 > maxFeatIdx) maxFeatIdx = i1;
        if (i2 > maxFeatIdx) maxFeatIdx = i2;
        si[o] = i1 | (i2 << 16);
        th[o] = r.real();
      }
      at = r.pos;
      const nLeaves = r.ulong();
      if (nLeaves !== splits + 1)
        throw new DlibFormatError(`tree ${tree} has ${nLeaves} leaves, expected ${splits + 1}`, at);
      let lo = tree * nLeaves * leafStride;
      for (let j = 0; j < nLeaves; j++) {
        // Inlined matrix<float,0,1> read: this loop decodes 16M floats, the bulk of the parse.
        at = r.pos;
        const lr = r.long();
        const lc = r.long();
        if ((lr !== dims && lr !== -dims) || (lc !== 1 && lc !== -1)) {
          throw new DlibFormatError(`leaf must be a ${dims}x1 matrix, found ${Math.abs(lr)}x${Math.abs(lc)}`, at);
        }
        r.floats(lv, lo, dims);
        lo += leafStride;
      }
    }
  }

  at = r.pos;
  const anchorCascades = r.ulong();
  if (anchorCascades !== cascades)
    throw new DlibFormatError(`anchor_idx has ${anchorCascades} cascades, expected ${cascades}`, at);
  let features = -1;
  let anchors: Uint16Array | undefined;
  for (let c = 0; c < cascades; c++) {
    at = r.pos;
    const f = r.ulong();
    if (features < 0) {
      if (f === 0 || f > 65536) throw new DlibFormatError(`implausible feature count ${f}`, at);
      // Every anchor takes at least 2 bytes in the file: refuse impossible sizes before allocating them.
      if (cascades * f * 2 > buf.length - at) throw new DlibFormatError(`${f} features cannot fit in the file`, at);
      features = f;
      anchors = shared(Uint16Array, cascades * f);
    } else if (f !== features) {
      throw new DlibFormatError(`cascade ${c} has ${f} features, cascade 0 has ${features}`, at);
    }
    for (let i = 0; i < features; i++) {
      at = r.pos;
      const a = r.ulong();
      if (a >= parts) throw new DlibFormatError(`anchor index ${a} out of range (${parts} parts)`, at);
      anchors![c * features + i] = a;
    }
  }
  if (maxFeatIdx >= features) {
    throw new DlibFormatError(`a split uses feature ${maxFeatIdx}, but cascades have only ${features} features`, r.pos);
  }

  at = r.pos;
  const deltaCascades = r.ulong();
  if (deltaCascades !== cascades)
    throw new DlibFormatError(`deltas has ${deltaCascades} cascades, expected ${cascades}`, at);
  const deltas = shared(Float32Array, cascades * features * 2);
  for (let c = 0; c < cascades; c++) {
    at = r.pos;
    const f = r.ulong();
    if (f !== features) throw new DlibFormatError(`deltas of cascade ${c} has ${f} entries, expected ${features}`, at);
    let o = c * features * 2;
    for (let i = 0; i < 2 * features; i++) deltas[o++] = r.real();
  }
  r.expectEnd();

  return {
    parts,
    cascades,
    treesPerCascade: trees,
    splitsPerTree: splits,
    featuresPerCascade: features,
    initialShape,
    splitIdx: splitIdx!,
    thresholds: thresholds!,
    leafStride,
    leaves: leaves!,
    memory: leafStorage!.memory,
    scratchOffset: leafStorage!.scratchOffset,
    scratchSlots: leafStorage!.scratchSlots,
    scratchSlotBytes: leafStorage!.scratchSlotBytes,
    anchors: anchors!,
    deltas,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Leaf accumulation kernel.
//
// Adding 7,500 leaf vectors of 136 floats (1M float32 additions per face, strictly in tree order) dominates the
// predictor. V8 compiles the scalar Float32Array loop to ~4-5 ns per element here (5+ ms per face). WebAssembly's
// f32x4.add does the same IEEE binary32 additions, lane by lane, and the kernel below keeps dlib's order for every
// element, so the result is bit-identical:
//
//   acc(cur, offs, n, nvec):
//     k = 0
//     while n - k >= 4:                       four leaves per pass over `cur`: one load and store of `cur` per
//       a, b, c, d = i32[offs + 4k .. +12]    four leaves, and four leaves' cache misses in flight at once
//       for v in 0..nvec-1: f32x4[cur+16v] = (((f32x4[cur+16v] + f32x4[a+16v]) + f32x4[b+16v]) + f32x4[c+16v])
//                                             + f32x4[d+16v]
//       k += 4
//     while k < n: a = i32[offs + 4k]; for v: f32x4[cur+16v] += f32x4[a+16v]; k += 1
//
// The leaves are spread over 65 MB, so the kernel waits on memory; grouping four leaves halves its time against a
// one-leaf loop. It imports one shared memory ("env"."mem") holding the leaves, so the model is shared across worker
// threads. Where WebAssembly SIMD or shared memory is unavailable, the same additions run in TypeScript.

/** Builds the kernel module (a few hundred bytes, assembled here so that no toolchain is needed). */
function accKernelWasm(): Uint8Array<ArrayBuffer> {
  const leb = (n: number): number[] => {
    const out: number[] = [];
    do {
      let b = n & 0x7f;
      n >>>= 7;
      if (n) b |= 0x80;
      out.push(b);
    } while (n);
    return out;
  };
  const str = (t: string): number[] => [t.length, ...Array.from(t, (ch) => ch.charCodeAt(0))];
  const section = (id: number, body: number[]): number[] => [id, ...leb(body.length), ...body];
  // Opcodes.
  const get = (i: number): number[] => [0x20, i];
  const set = (i: number): number[] => [0x21, i];
  const tee = (i: number): number[] => [0x22, i];
  const i32 = (v: number): number[] => [0x41, v]; // small non-negative constants only (< 64)
  const ADD = 0x6a;
  const SUB = 0x6b;
  const LT_U = 0x49;
  const EQZ = 0x45;
  const BLOCK = [0x02, 0x40];
  const LOOP = [0x03, 0x40];
  const END = 0x0b;
  const br = (depth: number): number[] => [0x0c, depth];
  const brIf = (depth: number): number[] => [0x0d, depth];
  const i32Load = (offset: number): number[] => [0x28, 0x02, offset];
  const V128_LOAD = [0xfd, 0x00, 0x04, 0x00];
  const V128_STORE = [0xfd, 0x0b, 0x04, 0x00];
  const F32X4_ADD = [0xfd, 0xe4, 0x01];
  const bump = (local: number, by: number): number[] => [...get(local), ...i32(by), ADD, ...set(local)];

  // Parameters 0 cur, 1 offs, 2 n, 3 nvec; locals 4 p, 5..8 leaf pointers a..d, 9 v.
  const [CUR, OFFS, N, NVEC, P, A, V] = [0, 1, 2, 3, 4, 5, 9];
  // One pass over the nvec lanes of `cur`, adding `leaves` leaves (pointers in locals A..A+leaves-1) in order.
  // prettier-ignore
  const lanes = (leaves: number): number[] => [
    ...get(NVEC), ...set(V), ...get(CUR), ...set(P), // v = nvec; p = cur
    ...LOOP,
    ...get(P), ...get(P), ...V128_LOAD, // (store address) x = cur lanes at p
    ...Array.from({ length: leaves }, (_, g) => [...get(A + g), ...V128_LOAD, ...F32X4_ADD]).flat(), // x += leaf g
    ...V128_STORE, // store x at p
    ...bump(P, 16), ...Array.from({ length: leaves }, (_, g) => bump(A + g, 16)).flat(),
    ...get(V), ...i32(1), SUB, ...tee(V), ...brIf(0), // while (--v)
    END,
  ];
  // prettier-ignore
  const body = [
    0x01, 0x06, 0x7f, // 6 i32 locals
    ...BLOCK, ...LOOP, // groups of four leaves
    ...get(N), ...i32(4), LT_U, ...brIf(1),
    ...[0, 1, 2, 3].flatMap((g) => [...get(OFFS), ...i32Load(4 * g), ...set(A + g)]),
    ...lanes(4),
    ...bump(OFFS, 16), ...get(N), ...i32(4), SUB, ...set(N), ...br(0),
    END, END,
    ...BLOCK, ...LOOP, // the remaining leaves, one at a time
    ...get(N), EQZ, ...brIf(1),
    ...get(OFFS), ...i32Load(0), ...set(A),
    ...lanes(1),
    ...bump(OFFS, 4), ...get(N), ...i32(1), SUB, ...set(N), ...br(0),
    END, END,
    END,
  ];
  // prettier-ignore
  return Uint8Array.from([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
    ...section(1, [0x01, 0x60, 0x04, 0x7f, 0x7f, 0x7f, 0x7f, 0x00]), // type 0: (i32 i32 i32 i32) -> ()
    // import env.mem: a shared memory (flags 3: has maximum, shared), minimum 1 page, maximum 65536 pages
    ...section(2, [0x01, ...str('env'), ...str('mem'), 0x02, 0x03, 0x01, ...leb(65536)]),
    ...section(3, [0x01, 0x00]), // function 0 has type 0
    ...section(7, [0x01, ...str('acc'), 0x00, 0x00]), // export "acc" = function 0
    ...section(10, [0x01, ...leb(body.length), ...body]),
  ]);
}

const WASM_PAGE = 65536;
/**
 * Scratch slots reserved next to the leaves: predictor instances alive at the same time, over all threads. An
 * instance gives its slot back on close() or when it is garbage collected; beyond this many, further instances
 * grow the memory (up to SCRATCH_GROW_PAGES_MAX pages, never returned), then fall back to the TypeScript loop.
 */
const SCRATCH_SLOTS = 128;
const SCRATCH_GROW_PAGES_MAX = 256;

let accModule: WebAssembly.Module | null | undefined;
function accModuleOrNull(): WebAssembly.Module | null {
  if (accModule === undefined) {
    try {
      const bytes = accKernelWasm();
      accModule = WebAssembly.validate(bytes) ? new WebAssembly.Module(bytes) : null;
    } catch {
      // No WebAssembly SIMD in this runtime: the TypeScript loop is used instead.
      accModule = null;
    }
  }
  return accModule;
}

interface LeafStorage {
  leaves: Float32Array;
  memory: WebAssembly.Memory | undefined;
  scratchOffset: number;
  scratchSlots: number;
  scratchSlotBytes: number;
}

/**
 * Leaf storage: in a shared WebAssembly memory followed by the scratch pool when the kernel can run, else on a
 * plain SharedArrayBuffer.
 */
function allocLeaves(count: number, leafStride: number, trees: number): LeafStorage {
  if (accModuleOrNull()) {
    // count is a multiple of 4 floats, so everything after the leaves stays 16-byte aligned for v128 access.
    const scratchOffset = count * 4;
    const scratchSlotBytes = Math.ceil((leafStride * 4 + trees * 4) / 64) * 64;
    const bytes = scratchOffset + SCRATCH_SLOTS * 4 + SCRATCH_SLOTS * scratchSlotBytes;
    const pages = Math.ceil(bytes / WASM_PAGE);
    try {
      const memory = new WebAssembly.Memory({ initial: pages, maximum: pages + SCRATCH_GROW_PAGES_MAX, shared: true });
      return {
        leaves: new Float32Array(memory.buffer, 0, count),
        memory,
        scratchOffset,
        scratchSlots: SCRATCH_SLOTS,
        scratchSlotBytes,
      };
    } catch (err) {
      log.warn('shared WebAssembly memory unavailable, using the TypeScript leaf loop', { err: err as Error });
    }
  }
  return {
    leaves: shared(Float32Array, count),
    memory: undefined,
    scratchOffset: 0,
    scratchSlots: 0,
    scratchSlotBytes: 0,
  };
}

/** An instance's SIMD kernel and its scratch slot (current shape and the chosen leaves' addresses). */
interface Kernel {
  acc: (cur: number, offs: number, n: number, nvec: number) => void;
  curPtr: number;
  offsPtr: number;
  cur: Float32Array;
  offs: Int32Array;
  /** Gives the slot back (no-op for a grown, unpooled slot). */
  release: () => void;
}

// Per thread: the kernel instantiated once per model memory.
const accByMemory = new WeakMap<WebAssembly.Memory, Kernel['acc']>();

// Gives a slot back when its predictor is garbage collected without close().
const slotFinalizer = new FinalizationRegistry<() => void>((release) => release());

/** Binds the kernel and claims a scratch slot for one predictor instance; null means: use the TypeScript loop. */
function claimKernel(data: ShapePredictorData): Kernel | null {
  const memory = data.memory;
  const mod = accModuleOrNull();
  if (!memory || !mod) return null;
  try {
    let acc = accByMemory.get(memory);
    if (!acc) {
      acc = new WebAssembly.Instance(mod, { env: { mem: memory } }).exports.acc as Kernel['acc'];
      accByMemory.set(memory, acc);
    }
    const flags = new Int32Array(memory.buffer, data.scratchOffset, data.scratchSlots);
    let base = -1;
    let release = (): void => {};
    for (let i = 0; i < data.scratchSlots; i++) {
      if (Atomics.compareExchange(flags, i, 0, 1) === 0) {
        base = data.scratchOffset + data.scratchSlots * 4 + i * data.scratchSlotBytes;
        release = () => void Atomics.store(flags, i, 0);
        break;
      }
    }
    if (base < 0) {
      // Growing a shared memory is atomic: the new pages belong to this instance alone. A memory cannot shrink,
      // so they are never returned.
      log.warn('all shape predictor scratch slots are taken (are instances closed?); growing the model memory', {
        slots: data.scratchSlots,
      });
      base = memory.grow(Math.ceil(data.scratchSlotBytes / WASM_PAGE)) * WASM_PAGE;
    }
    const buf = memory.buffer;
    const curBytes = data.leafStride * 4;
    return {
      acc,
      curPtr: base,
      offsPtr: base + curBytes,
      cur: new Float32Array(buf, base, data.leafStride),
      offs: new Int32Array(buf, base + curBytes, data.treesPerCascade),
      release,
    };
  } catch (err) {
    log.warn('no room for SIMD scratch in the shared model memory, using the TypeScript leaf loop', {
      err: err as Error,
    });
    return null;
  }
}

/** This thread's parse of `key` (a resolved path): started once; a failed one is forgotten (a later call retries). */
function parseOnce(key: string): Promise<ShapePredictorData> {
  let parse = parses.get(key);
  if (!parse) {
    const started = loadData(key);
    parses.set(key, started);
    started.catch(() => {
      if (parses.get(key) === started) parses.delete(key);
    });
    parse = started;
  }
  return parse;
}

/** Reads and parses a model file, with errors that name the file. */
async function loadData(file: string): Promise<ShapePredictorData> {
  let buf: Buffer;
  try {
    const st = await stat(file);
    if (!st.isFile()) throw new ModelPackError(PACK, file, 'not a regular file');
    buf = await readFile(file);
  } catch (err) {
    if (err instanceof ModelPackError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      const hint =
        file === DEFAULT_SHAPE_PREDICTOR_PATH
          ? 'not found; install the Debian package with `apt-get install libdlib-data`'
          : `not found (the default 68-point model comes from \`apt-get install libdlib-data\`, at ${DEFAULT_SHAPE_PREDICTOR_PATH})`;
      throw new ModelPackError(PACK, file, hint, { cause: err });
    }
    throw new ModelPackError(PACK, file, `cannot be read (${code ?? 'error'})`, { cause: err });
  }
  const t0 = performance.now();
  let data: ShapePredictorData;
  try {
    data = parseShapePredictor(buf);
  } catch (err) {
    if (err instanceof DlibFormatError) {
      throw new ModelPackError(PACK, file, `not a valid dlib shape_predictor file: ${err.message}`, { cause: err });
    }
    throw err;
  }
  log.info('shape predictor loaded', {
    file,
    bytes: buf.length,
    parts: data.parts,
    cascades: data.cascades,
    trees: data.treesPerCascade,
    simd: data.memory !== undefined,
    parseMs: Math.round((performance.now() - t0) * 10) / 10,
  });
  return data;
}

/** Options for {@link ShapePredictor.fromShared}. */
export interface ShapePredictorOptions {
  /**
   * Use the WebAssembly SIMD leaf kernel when the model lives in shared WebAssembly memory (default true).
   * `false` forces the TypeScript loop, which gives identical results more slowly.
   */
  simd?: boolean;
}

/**
 * dlib's shape predictor. {@link ShapePredictor.load} parses a model file once per process; `predict` is
 * synchronous and allocation-free. A worker thread gets the parsed model with `toShared()` + `postMessage` and builds
 * its own instance with {@link ShapePredictor.fromShared}: the model memory is shared, never copied.
 *
 * An instance holds a scratch slot in the shared model memory: `close()` it when done (garbage collection also
 * returns it, but a terminated worker cannot).
 */
export class ShapePredictor {
  /** Number of landmarks (68 for the default model). */
  readonly parts: number;
  /** Number of trees over all cascades: the length `leafOut` needs. */
  readonly treeCount: number;

  readonly #data: ShapePredictorData;
  readonly #dims: number;
  readonly #cascades: number;
  readonly #trees: number;
  readonly #splits: number;
  readonly #features: number;
  readonly #leafStride: number;
  readonly #initialShape: Float32Array;
  readonly #splitIdx: Int32Array;
  readonly #thresholds: Float32Array;
  readonly #leaves: Float32Array;
  readonly #anchors: Uint16Array;
  readonly #deltas: Float32Array;
  // The initial shape centred on its mean (double), and its variance: constant parts of the similarity fit.
  readonly #initCentered: Float64Array;
  readonly #initSigma: number;
  // Per-call scratch: the current normalized shape, feature pixel values, and (SIMD) the chosen leaves' addresses.
  readonly #cur: Float32Array;
  readonly #feat: Float64Array;
  readonly #kernel: Kernel | null;
  #closed = false;

  private constructor(data: ShapePredictorData, options: ShapePredictorOptions = {}) {
    this.#data = data;
    this.parts = data.parts;
    this.#dims = data.parts * 2;
    this.#cascades = data.cascades;
    this.#trees = data.treesPerCascade;
    this.#splits = data.splitsPerTree;
    this.#features = data.featuresPerCascade;
    this.#leafStride = data.leafStride;
    this.treeCount = data.cascades * data.treesPerCascade;
    this.#initialShape = data.initialShape;
    this.#splitIdx = data.splitIdx;
    this.#thresholds = data.thresholds;
    this.#leaves = data.leaves;
    this.#anchors = data.anchors;
    this.#deltas = data.deltas;
    this.#kernel = options.simd !== false ? claimKernel(data) : null;
    if (this.#kernel) slotFinalizer.register(this, this.#kernel.release, this);
    this.#cur = this.#kernel ? this.#kernel.cur : new Float32Array(data.leafStride);
    this.#feat = new Float64Array(this.#features);

    const n = data.parts;
    const init = data.initialShape;
    let mx = 0;
    let my = 0;
    for (let i = 0; i < n; i++) {
      mx += init[2 * i]!;
      my += init[2 * i + 1]!;
    }
    mx /= n;
    my /= n;
    const c = new Float64Array(2 * n);
    let sig = 0;
    for (let i = 0; i < n; i++) {
      const dx = init[2 * i]! - mx;
      const dy = init[2 * i + 1]! - my;
      c[2 * i] = dx;
      c[2 * i + 1] = dy;
      sig += dx * dx + dy * dy;
    }
    this.#initCentered = c;
    this.#initSigma = sig / n;
  }

  /**
   * The predictor for a dlib shape_predictor .dat file. The file is read and parsed once per process and path
   * (concurrent callers share the same parse); every caller in a thread gets the same instance, until it is closed
   * (the next call then makes a new instance from the cached parse). A failed load is not cached: a later call
   * retries.
   * @throws ModelPackError (code MODEL_PACK_INVALID) naming the file when it is missing or malformed.
   */
  static async load(file: string = DEFAULT_SHAPE_PREDICTOR_PATH): Promise<ShapePredictor> {
    const key = path.resolve(file);
    const data = await parseOnce(key);
    let sp = loaded.get(key);
    if (!sp || sp.closed) {
      sp = new ShapePredictor(data);
      loaded.set(key, sp);
    }
    return sp;
  }

  /**
   * This thread's parse of `file` (the one load() uses, read and parsed once), to hand to worker threads: its arrays
   * live on shared memory, so postMessage() shares the model instead of copying it, and a worker that adopt()s it
   * neither reads nor parses the file (and holds no copy of its own).
   */
  static shared(file: string = DEFAULT_SHAPE_PREDICTOR_PATH): Promise<ShapePredictorData> {
    return parseOnce(path.resolve(file));
  }

  /** Makes `data` (shared() of another thread) this thread's parse of `file`, unless it already has one. */
  static adopt(data: ShapePredictorData, file: string = DEFAULT_SHAPE_PREDICTOR_PATH): void {
    const key = path.resolve(file);
    if (!parses.has(key)) parses.set(key, Promise.resolve(data));
  }

  /** Forgets the cached parse and instance for `file` (or all), so the next load re-reads the file. */
  static clearCache(file?: string): void {
    if (file === undefined) {
      parses.clear();
      loaded.clear();
    } else {
      parses.delete(path.resolve(file));
      loaded.delete(path.resolve(file));
    }
  }

  /**
   * Builds a predictor from a dlib shape_predictor stream already in memory (not cached).
   * @throws DlibFormatError when the stream is malformed.
   */
  static fromBuffer(buf: Uint8Array): ShapePredictor {
    return new ShapePredictor(parseShapePredictor(buf));
  }

  /** Whether {@link close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Gives this instance's scratch slot back to the shared pool; predict() then throws. Idempotent. The model
   * memory itself lives on while any instance or thread references it.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#kernel) {
      slotFinalizer.unregister(this);
      this.#kernel.release();
    }
  }

  /** Whether this instance adds leaves with the WebAssembly SIMD kernel (else the TypeScript loop). */
  get simd(): boolean {
    return this.#kernel !== null;
  }

  /**
   * The model as shared typed arrays (and the shared WebAssembly memory that holds the leaves): post it to a
   * worker and call {@link fromShared} there. Nothing is copied.
   */
  toShared(): ShapePredictorData {
    return this.#data;
  }

  /**
   * A predictor over model data from {@link toShared} (typically received via `postMessage`). Checks the sizes;
   * does not copy.
   * @throws TypeError when the object is not a consistent ShapePredictorData.
   */
  static fromShared(data: ShapePredictorData, options?: ShapePredictorOptions): ShapePredictor {
    const { parts, cascades, treesPerCascade: t, splitsPerTree: s, featuresPerCascade: f, leafStride } = data;
    const ints = [parts, cascades, t, s, f, leafStride];
    if (
      !ints.every((v) => Number.isInteger(v) && v > 0) ||
      ((s + 1) & s) !== 0 ||
      leafStride !== ((2 * parts + 3) & ~3)
    ) {
      throw new TypeError('ShapePredictorData: invalid sizes');
    }
    const nTrees = cascades * t;
    const checks: [string, unknown, typeof Float32Array | typeof Uint16Array | typeof Int32Array, number][] = [
      ['initialShape', data.initialShape, Float32Array, 2 * parts],
      ['splitIdx', data.splitIdx, Int32Array, nTrees * s],
      ['thresholds', data.thresholds, Float32Array, nTrees * s],
      ['leaves', data.leaves, Float32Array, nTrees * (s + 1) * leafStride],
      ['anchors', data.anchors, Uint16Array, cascades * f],
      ['deltas', data.deltas, Float32Array, cascades * f * 2],
    ];
    for (const [name, arr, Ctor, len] of checks) {
      if (!(arr instanceof Ctor) || (arr as ArrayLike<number>).length !== len) {
        throw new TypeError(`ShapePredictorData: ${name} must be a ${Ctor.name} of length ${len}`);
      }
    }
    for (let i = 0; i < nTrees * s; i++) {
      const p = data.splitIdx[i]!;
      if ((p & 0xffff) >= f || p >>> 16 >= f)
        throw new TypeError('ShapePredictorData: split feature index out of range');
    }
    for (let i = 0; i < cascades * f; i++) {
      if (data.anchors[i]! >= parts) throw new TypeError('ShapePredictorData: anchor index out of range');
    }
    let memory = data.memory;
    let leaves = data.leaves;
    if (memory !== undefined) {
      if (!(memory instanceof WebAssembly.Memory))
        throw new TypeError('ShapePredictorData: memory must be a WebAssembly.Memory');
      const { scratchOffset, scratchSlots, scratchSlotBytes } = data;
      const end = leaves.byteOffset + leaves.byteLength;
      const scratchEnd = scratchOffset + scratchSlots * (4 + scratchSlotBytes);
      if (
        ![scratchOffset, scratchSlots, scratchSlotBytes].every(Number.isInteger) ||
        leaves.byteOffset % 16 !== 0 ||
        scratchOffset < end ||
        scratchOffset % 16 !== 0 ||
        scratchSlotBytes % 16 !== 0 ||
        scratchSlotBytes < 4 * (leafStride + t) ||
        scratchEnd > memory.buffer.byteLength
      ) {
        throw new TypeError('ShapePredictorData: inconsistent leaf and scratch layout in memory');
      }
      // The kernel reads the leaves through the memory: view them through it too, so both agree by construction.
      leaves = new Float32Array(memory.buffer, leaves.byteOffset, leaves.length);
    } else {
      memory = undefined;
    }
    return new ShapePredictor({ ...data, leaves, memory }, options);
  }

  /**
   * Runs the cascade on `img` inside `box` and writes the integer landmarks, exactly as dlib returns them.
   * @param box dlib's inclusive integer corners (the scale is r-l and b-t; degenerate and inverted boxes are
   *   accepted, as dlib does). Non-integer corners are used as given, where dlib would have truncated them.
   * @param out at least 2P ints: x0, y0, x1, y1, ... (may lie outside the image).
   * @param leafOut optional, at least {@link treeCount} ints: the leaf (0..S) reached in each tree, cascade-major.
   * @throws TypeError on an invalid image, box or too short output arrays; InvalidStateError after close().
   */
  predict(img: GrayImage, box: Box, out: Int32Array, leafOut?: Int32Array): void {
    this.#check(img, box, out, leafOut);
    this.#run(img, box, leafOut);
    const cur = this.#cur;
    const sx = box.r - box.l;
    const sy = box.b - box.t;
    const l = box.l;
    const t = box.t;
    const dims = this.#dims;
    for (let j = 0; j < dims; j += 2) {
      out[j] = Math.floor(sx * cur[j]! + l + 0.5);
      out[j + 1] = Math.floor(sy * cur[j + 1]! + t + 0.5);
    }
  }

  /**
   * Like {@link predict}, but writes the sub-pixel positions before dlib's rounding: `(r-l)*x + l` and
   * `(b-t)*y + t` of the final normalized shape, stored as float32 (for temporal smoothing).
   */
  predictFloat(img: GrayImage, box: Box, out: Float32Array, leafOut?: Int32Array): void {
    this.#check(img, box, out, leafOut);
    this.#run(img, box, leafOut);
    const cur = this.#cur;
    const sx = box.r - box.l;
    const sy = box.b - box.t;
    const l = box.l;
    const t = box.t;
    const dims = this.#dims;
    for (let j = 0; j < dims; j += 2) {
      out[j] = sx * cur[j]! + l;
      out[j + 1] = sy * cur[j + 1]! + t;
    }
  }

  #check(img: GrayImage, box: Box, out: ArrayLike<number>, leafOut: Int32Array | undefined): void {
    if (this.#closed) throw new InvalidStateError('shape predictor is closed');
    if (out.length < this.#dims) throw new TypeError(`out needs ${this.#dims} elements, got ${out.length}`);
    if (leafOut && leafOut.length < this.treeCount) {
      throw new TypeError(`leafOut needs ${this.treeCount} elements, got ${leafOut.length}`);
    }
    const { width, height, data } = img;
    if (
      !Number.isInteger(width) ||
      !Number.isInteger(height) ||
      width < 0 ||
      height < 0 ||
      data.length < width * height
    ) {
      throw new TypeError(`invalid GrayImage ${width}x${height} with ${data.length} bytes`);
    }
    if (!Number.isFinite(box.l) || !Number.isFinite(box.t) || !Number.isFinite(box.r) || !Number.isFinite(box.b)) {
      throw new TypeError('box corners must be finite numbers');
    }
  }

  /** The cascade (FORMAT.md §3); leaves the normalized shape in #cur. */
  #run(img: GrayImage, box: Box, leafOut: Int32Array | undefined): void {
    const cur = this.#cur;
    const feat = this.#feat;
    const dims = this.#dims;
    const n = this.parts;
    const F = this.#features;
    const T = this.#trees;
    const S = this.#splits;
    const leafStride = this.#leafStride;
    const treeStride = (S + 1) * leafStride;
    const splitIdx = this.#splitIdx;
    const thresholds = this.#thresholds;
    const leaves = this.#leaves;
    const anchors = this.#anchors;
    const deltas = this.#deltas;
    const ic = this.#initCentered;
    const sig = this.#initSigma;
    const kernel = this.#kernel;
    const offs = kernel ? kernel.offs : null;
    const leafBase = leaves.byteOffset;
    const width = img.width;
    const height = img.height;
    const pix = img.data;
    const sx = box.r - box.l;
    const sy = box.b - box.t;
    const bl = box.l;
    const bt = box.t;
    const fround = Math.fround;

    cur.set(this.#initialShape);
    for (let c = 0; c < this.#cascades; c++) {
      // (a) Similarity transform initial -> cur (2x2 part only), closed form in double (equals dlib's SVD fit).
      let mx = 0;
      let my = 0;
      for (let j = 0; j < dims; j += 2) {
        mx += cur[j]!;
        my += cur[j + 1]!;
      }
      mx /= n;
      my /= n;
      let c00 = 0;
      let c01 = 0;
      let c10 = 0;
      let c11 = 0;
      for (let j = 0; j < dims; j += 2) {
        const tx = cur[j]! - mx;
        const ty = cur[j + 1]! - my;
        const fx = ic[j]!;
        const fy = ic[j + 1]!;
        c00 += tx * fx;
        c01 += tx * fy;
        c10 += ty * fx;
        c11 += ty * fy;
      }
      c00 /= n;
      c01 /= n;
      c10 /= n;
      c11 /= n;
      const a = fround((c00 + c11) / sig);
      const b = fround((c10 - c01) / sig);
      const nb = -b;

      // (b) Feature pixels: float32 arithmetic in dlib's order, then the box mapping in double, dlib's rounding.
      const fBase = c * F;
      for (let i = 0; i < F; i++) {
        const k2 = 2 * anchors[fBase + i]!;
        const dx = deltas[2 * (fBase + i)]!;
        const dy = deltas[2 * (fBase + i) + 1]!;
        const px = fround(fround(fround(a * dx) + fround(nb * dy)) + cur[k2]!);
        const py = fround(fround(fround(b * dx) + fround(a * dy)) + cur[k2 + 1]!);
        const X = Math.floor(sx * px + bl + 0.5);
        const Y = Math.floor(sy * py + bt + 0.5);
        feat[i] = X >= 0 && X < width && Y >= 0 && Y < height ? pix[Y * width + X]! : 0;
      }

      // (c) Walk the trees, then add the chosen leaves in tree order with float32 additions. (The tree walk reads
      // only this cascade's features, so it may finish before the additions start.)
      const tree0 = c * T;
      for (let k = 0; k < T; k++) {
        const tree = tree0 + k;
        const sBase = tree * S;
        let node = 0;
        while (node < S) {
          const o = sBase + node;
          const pair = splitIdx[o]!;
          // Branch-free (left = 2n+1 when the difference exceeds the threshold): the trees split about half and
          // half, so a branch here would mispredict often; this halves the walk time in V8.
          node = 2 * node + 2 - Number(feat[pair & 0xffff]! - feat[pair >>> 16]! > thresholds[o]!);
        }
        const leaf = node - S;
        if (leafOut !== undefined) leafOut[tree] = leaf;
        const lo = tree * treeStride + leaf * leafStride;
        if (offs !== null) {
          offs[k] = leafBase + 4 * lo;
        } else {
          // A Float32Array store rounds each double sum to float32: exactly a float addition.
          for (let j = 0, q = lo; j < dims; j++, q++) cur[j] = cur[j]! + leaves[q]!;
        }
      }
      if (kernel !== null) kernel.acc(kernel.curPtr, kernel.offsPtr, T, leafStride >> 2);
    }
  }
}
