/**
 * dlib serialization primitives (dlib/serialize.h, float_details.h), read from a byte buffer in one pass.
 * See ../shared/reference/FORMAT.md §1. All values are little-endian with no padding.
 *
 * The reader throws {@link DlibFormatError} with the byte offset; callers wrap it into an error that names the
 * file (the reader does not know which file it reads).
 */

/** A malformed dlib stream: what was expected and at which byte offset. */
export class DlibFormatError extends Error {
  readonly offset: number;
  constructor(message: string, offset: number) {
    super(`${message} (at byte ${offset})`);
    this.name = 'DlibFormatError';
    this.offset = offset;
  }
}

// 2^e for every e where 2^e is a normal double (other exponents use 2 ** e); a table beats Math.pow in the
// 16M-float parse. Floats' exponents (one byte, |e| <= 255) always hit it.
const POW2_MIN = -1022;
const POW2 = (() => {
  const t = new Float64Array(1023 - POW2_MIN + 1);
  for (let i = 0; i < t.length; i++) t[i] = 2 ** (i + POW2_MIN);
  return t;
})();

const EXP_POS_INF = 32000;
const EXP_NEG_INF = 32001;
const EXP_NAN = 32002;

/**
 * Sequential reader over a dlib-serialized buffer. Methods advance {@link DlibReader.pos}.
 * Integer byte limits follow dlib: a `long`/`unsigned long`/`int64` may use up to 8 bytes, an `int` 4, a
 * `short` 2; unsigned types reject the sign bit; every value must fit in a JS number (< 2^53).
 */
export class DlibReader {
  readonly buf: Uint8Array;
  pos: number;

  constructor(buf: Uint8Array, pos = 0) {
    this.buf = buf;
    this.pos = pos;
  }

  /** Bytes left after {@link pos}. */
  get remaining(): number {
    return this.buf.length - this.pos;
  }

  /**
   * One integer in dlib's variable-length encoding (FORMAT.md §1.1).
   * @param maxBytes sizeof(T): 8 for long/int64, 4 for int, 2 for short.
   * @param unsigned whether T is unsigned (a set sign bit is then an error).
   */
  int(maxBytes: number, unsigned: boolean): number {
    const buf = this.buf;
    const start = this.pos;
    if (start >= buf.length) throw new DlibFormatError('unexpected end of data while reading an integer', start);
    const c = buf[start]!;
    const n = c & 0x0f;
    if (n === 0 || n > maxBytes || (c & 0x70) !== 0) {
      throw new DlibFormatError(`invalid integer header byte 0x${c.toString(16)} (max ${maxBytes} bytes)`, start);
    }
    if (unsigned && (c & 0x80) !== 0) throw new DlibFormatError('negative value for an unsigned integer', start);
    const end = start + 1 + n;
    if (end > buf.length) throw new DlibFormatError('unexpected end of data inside an integer', start);
    let v = 0;
    let mul = 1;
    for (let p = start + 1; p < end; p++) {
      v += buf[p]! * mul;
      mul *= 256;
    }
    if (v > Number.MAX_SAFE_INTEGER) throw new DlibFormatError('integer does not fit in 53 bits', start);
    this.pos = end;
    return (c & 0x80) !== 0 ? -v : v;
  }

  /** `unsigned long` (sizes, counts, indices). */
  ulong(): number {
    return this.int(8, true);
  }

  /** `long` (matrix dimensions). */
  long(): number {
    return this.int(8, false);
  }

  /** `int`. */
  int32(): number {
    return this.int(4, false);
  }

  /**
   * A float or double in dlib's portable format (FORMAT.md §1.2): int64 mantissa then int16 exponent.
   * Returns the double value; a float32 field is exactly `Math.fround` of it.
   */
  real(): number {
    // Hand-inlined: this decodes 16M floats when a shape predictor loads, the bulk of the parse time.
    const buf = this.buf;
    const start = this.pos;
    const len = buf.length;
    if (start + 4 > len) throw new DlibFormatError('unexpected end of data while reading a float', start);
    const c = buf[start]!;
    const n = c & 0x0f;
    if ((c & 0x70) !== 0)
      throw new DlibFormatError('legacy (pre-2013 ASCII) dlib float encoding is not supported', start);
    if (n === 0 || n > 8) throw new DlibFormatError(`invalid float mantissa header byte 0x${c.toString(16)}`, start);
    let p = start + 1;
    const mEnd = p + n;
    if (mEnd + 2 > len) throw new DlibFormatError('unexpected end of data inside a float', start);
    let m: number;
    if (n <= 3) {
      m = buf[p]!;
      if (n > 1) m |= buf[p + 1]! << 8;
      if (n > 2) m |= buf[p + 2]! << 16;
      p = mEnd;
    } else {
      m = 0;
      let mul = 1;
      for (; p < mEnd; p++) {
        m += buf[p]! * mul;
        mul *= 256;
      }
    }
    if ((c & 0x80) !== 0) m = -m;
    const ce = buf[p]!;
    const ne = ce & 0x0f;
    if (ne === 0 || ne > 2 || (ce & 0x70) !== 0) {
      throw new DlibFormatError(`invalid float exponent header byte 0x${ce.toString(16)}`, p);
    }
    if (p + 1 + ne > len) throw new DlibFormatError('unexpected end of data inside a float', start);
    let e = ne === 1 ? buf[p + 1]! : buf[p + 1]! | (buf[p + 2]! << 8);
    this.pos = p + 1 + ne;
    if ((ce & 0x80) !== 0) e = -e;
    else if (e >= EXP_POS_INF) {
      if (e === EXP_POS_INF) return Infinity;
      if (e === EXP_NEG_INF) return -Infinity;
      if (e === EXP_NAN) return NaN;
    }
    const i = e - POW2_MIN;
    return i >= 0 && i < POW2.length ? m * POW2[i]! : m * 2 ** e;
  }

  /**
   * `count` consecutive floats into `out[offset..]` (rounded by the Float32Array store, i.e. `Math.fround`).
   * Same result as calling {@link real} `count` times; a fast path covers the common 1-3 byte mantissa with a
   * 1 byte exponent.
   */
  floats(out: Float32Array, offset: number, count: number): void {
    const buf = this.buf;
    const end = buf.length - 5;
    let p = this.pos;
    for (let i = 0; i < count; i++) {
      const c = buf[p]!;
      const n = c & 0x7f;
      const q = p + 1 + n;
      if (p <= end && n >= 1 && n <= 3 && (buf[q]! & 0x7f) === 1) {
        let m = buf[p + 1]!;
        if (n > 1) m |= buf[p + 2]! << 8;
        if (n > 2) m |= buf[p + 3]! << 16;
        if (c & 0x80) m = -m;
        const e = buf[q]! & 0x80 ? -buf[q + 1]! : buf[q + 1]!;
        out[offset + i] = m * POW2[e - POW2_MIN]!;
        p = q + 2;
      } else {
        this.pos = p;
        out[offset + i] = this.real();
        p = this.pos;
      }
    }
    this.pos = p;
  }

  /** A float32 field: the decoded value rounded to float (exact for values dlib wrote from a float). */
  float(): number {
    return Math.fround(this.real());
  }

  /**
   * Header of a `dlib::matrix` (FORMAT.md §1.3): rows and columns, written negated by current dlib.
   * Returns [nr, nc] as non-negative numbers.
   */
  matrixDims(): [number, number] {
    const nr = this.long();
    const nc = this.long();
    return [Math.abs(nr), Math.abs(nc)];
  }

  /**
   * A `matrix<float,0,1>` column vector of exactly `expected` floats, written into `out` at `offset`.
   * @throws DlibFormatError when the dimensions differ.
   */
  floatColumn(expected: number, out: Float32Array, offset: number): void {
    const at = this.pos;
    const [nr, nc] = this.matrixDims();
    if (nc !== 1 || nr !== expected) {
      throw new DlibFormatError(`expected a ${expected}x1 float matrix, found ${nr}x${nc}`, at);
    }
    for (let i = 0; i < nr; i++) out[offset + i] = this.real();
  }

  /** Throws unless the whole buffer was consumed. */
  expectEnd(): void {
    if (this.pos !== this.buf.length) {
      throw new DlibFormatError(`${this.buf.length - this.pos} trailing bytes after the last field`, this.pos);
    }
  }
}
