/**
 * The visible "AI avatar" mark, burnt into I420 frames: white text on a dark translucent box in one corner. Pure code,
 * no font files: a 5 x 7 bitmap font for the few glyphs the label needs, scaled with the frame (2 px per font pixel at
 * 512 px tall). The blend tables are built once per (frame size, corner, opacity); stamping a frame touches only the
 * mark's box (~120 x 26 px at 512²).
 */
import type { I420Frame } from '../types/image.js';
import type { MarkCorner } from './config.js';

export const MARK_TEXT = 'AI avatar';

/** 5 x 7 glyphs, one string per row, '#' = ink. */
const GLYPHS: Record<string, readonly string[]> = {
  A: ['.###.', '#...#', '#...#', '#####', '#...#', '#...#', '#...#'],
  I: ['.###.', '..#..', '..#..', '..#..', '..#..', '..#..', '.###.'],
  a: ['.....', '.....', '.###.', '....#', '.####', '#...#', '.####'],
  v: ['.....', '.....', '#...#', '#...#', '#...#', '.#.#.', '..#..'],
  t: ['.#...', '.#...', '###..', '.#...', '.#...', '.#..#', '..##.'],
  r: ['.....', '.....', '#.##.', '##..#', '#....', '#....', '#....'],
  ' ': ['.....', '.....', '.....', '.....', '.....', '.....', '.....'],
};

export interface MarkOptions {
  corner: MarkCorner;
  /** Text opacity 0..1; the box behind it is drawn at 0.6 x this. */
  opacity: number;
}

/** Where the mark lands in a frame, in pixels (even coordinates and sizes, so that chroma lines up). */
export interface MarkBox {
  x: number;
  y: number;
  width: number;
  height: number;
}

/** The mark's box in a width x height frame. */
export function markBox(width: number, height: number, corner: MarkCorner): MarkBox {
  const scale = markScale(height);
  const even = (v: number): number => Math.max(0, Math.floor(v / 2) * 2);
  const w = even((MARK_TEXT.length * 6 - 1 + 4) * scale + 1);
  const h = even((7 + 4) * scale + 1);
  const margin = even(Math.max(4, height / 64));
  const bw = Math.min(w, width);
  const bh = Math.min(h, height);
  const x = corner.endsWith('left') ? Math.min(margin, width - bw) : even(width - bw - margin);
  const y = corner.startsWith('top') ? Math.min(margin, height - bh) : even(height - bh - margin);
  return { x: Math.max(0, x), y: Math.max(0, y), width: bw, height: bh };
}

function markScale(height: number): number {
  return Math.max(1, Math.round(height / 256));
}

/**
 * Stamps the mark into frames of any size. Per-size tables (Q8 alpha and target luma per box pixel) are cached, so
 * the per-frame cost is a blend over the box only.
 */
export class VisibleMark {
  readonly #opts: MarkOptions;
  #w = 0;
  #h = 0;
  #box: MarkBox = { x: 0, y: 0, width: 0, height: 0 };
  /** Per box pixel: alpha (0..256) and the luma it blends towards. */
  #alpha = new Uint16Array(0);
  #target = new Uint8Array(0);
  /** Per chroma sample of the box: alpha towards neutral (128). */
  #alphaC = new Uint16Array(0);

  constructor(opts: MarkOptions) {
    if (!(opts.opacity >= 0 && opts.opacity <= 1)) throw new TypeError('mark opacity must be in 0..1');
    this.#opts = { ...opts };
  }

  /** The box of the mark in the last frame size stamped. */
  get box(): MarkBox {
    return { ...this.#box };
  }

  /** Burns the mark into the frame, in place. */
  apply(frame: I420Frame): void {
    if (frame.width !== this.#w || frame.height !== this.#h) this.#build(frame.width, frame.height);
    const { x: bx, y: by, width: bw, height: bh } = this.#box;
    const W = frame.width;
    const d = frame.data;
    for (let y = 0, k = 0; y < bh; y++) {
      let i = (by + y) * W + bx;
      for (let x = 0; x < bw; x++, k++, i++) {
        const a = this.#alpha[k]!;
        d[i] = (d[i]! * (256 - a) + this.#target[k]! * a + 128) >> 8;
      }
    }
    const cw = W >> 1;
    const uOff = W * frame.height;
    const vOff = uOff + cw * (frame.height >> 1);
    const cbw = bw >> 1;
    for (let y = 0, k = 0; y < bh >> 1; y++) {
      const row = ((by >> 1) + y) * cw + (bx >> 1);
      for (let x = 0; x < cbw; x++, k++) {
        const a = this.#alphaC[k]!;
        const iu = uOff + row + x;
        const iv = vOff + row + x;
        d[iu] = (d[iu]! * (256 - a) + 128 * a + 128) >> 8;
        d[iv] = (d[iv]! * (256 - a) + 128 * a + 128) >> 8;
      }
    }
  }

  #build(width: number, height: number): void {
    const box = markBox(width, height, this.#opts.corner);
    const s = markScale(height);
    const boxA = Math.round(256 * 0.6 * this.#opts.opacity);
    const textA = Math.round(256 * this.#opts.opacity);
    const n = box.width * box.height;
    this.#alpha = new Uint16Array(n).fill(boxA);
    this.#target = new Uint8Array(n).fill(16);
    // Text origin inside the box: 2 font pixels of padding.
    const ox = 2 * s;
    const oy = 2 * s;
    for (let c = 0; c < MARK_TEXT.length; c++) {
      const glyph = GLYPHS[MARK_TEXT[c]!]!;
      for (let gy = 0; gy < 7; gy++) {
        for (let gx = 0; gx < 5; gx++) {
          if (glyph[gy]![gx] !== '#') continue;
          for (let py = 0; py < s; py++) {
            for (let px = 0; px < s; px++) {
              const x = ox + (c * 6 + gx) * s + px;
              const y = oy + gy * s + py;
              if (x >= box.width || y >= box.height) continue;
              this.#alpha[y * box.width + x] = textA;
              this.#target[y * box.width + x] = 235;
            }
          }
        }
      }
    }
    this.#alphaC = new Uint16Array((box.width >> 1) * (box.height >> 1)).fill(boxA);
    this.#box = box;
    this.#w = width;
    this.#h = height;
  }
}
