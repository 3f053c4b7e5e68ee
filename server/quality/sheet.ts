/**
 * Contact sheet for the quality evaluation (`avatar eval --sheet OUT.png`): a header band with title lines, a row of
 * column headers, then one row per sampled frame: the tiles side by side (e.g. driver | frozen | output), each scaled
 * to fit a tileSize × tileSize square (aspect kept, letterboxed), and the frame's label lines (index and scores) to the
 * right of the tiles. Dark text on a light background throughout.
 *
 * Text uses a small built-in bitmap font (5×9 glyphs drawn at 2×: 14 px capitals, 12 px advance, 20 px lines), not
 * SVG `<text>`. SVG text did render here (librsvg in sharp 0.35 with DejaVu), but it needs fontconfig and installed
 * fonts on the machine that runs the evaluation: without them text is silently left out or the process aborts
 * (lovell/sharp#4374, #4409), possibly after minutes of rendering on a bare GPU box. The bitmap font draws the same
 * pixels everywhere and needs nothing. It covers printable ASCII; other characters are drawn as '?'.
 *
 * Layout is a pure function (`layoutContactSheet`), so the geometry can be checked without decoding images.
 */
import { randomBytes } from 'node:crypto';
import { rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import type { RgbImage } from '../types/image.js';

/** One row of the sheet: the tiles (one per column; null = no frame) and the label lines beside them. */
export interface SheetRow {
  /** One per column, in column order. null draws a grey "no face" tile. */
  tiles: readonly (RgbImage | null)[];
  /** Frame index and scores. A string may hold several lines ('\n'); long lines are wrapped, preferably at " | ". */
  label: string | readonly string[];
}

export interface SheetSpec {
  /** Header lines (run, engine, clip, summary scores). */
  title: readonly string[];
  /** Column headers, e.g. ['driver', 'frozen', 'output']; every row has one tile per column. */
  columns: readonly string[];
  /** At most MAX_ROWS rows; none gives a sheet with the header only. */
  rows: readonly SheetRow[];
  /** Side of the square each tile is fitted into, in px (integer, 64..512; default 192). */
  tileSize?: number;
}

export const MAX_ROWS = 64;
export const MAX_COLUMNS = 8;
export const MIN_TILE_SIZE = 64;
export const MAX_TILE_SIZE = 512;
export const DEFAULT_TILE_SIZE = 192;
/** Largest accepted source tile side (a 4K frame fits). */
export const MAX_SOURCE_SIDE = 8192;
/** The whole sheet is refused above this many pixels (3 bytes each while it is drawn). */
export const MAX_SHEET_PIXELS = 64_000_000;

/** Font metrics, in sheet pixels. */
const SCALE = 2;
const GLYPH_W = 5;
const GLYPH_H = 9;
/** Horizontal advance per character. */
export const CHAR_W = (GLYPH_W + 1) * SCALE;
/** Height of one text line (glyph box plus spacing). */
export const LINE_H = (GLYPH_H + 1) * SCALE;

const MARGIN = 12;
const TILE_GAP = 8;
const LABEL_GAP = 16;
const ROW_GAP = 12;
const HEADER_GAP = 8;
/** Label and title lines longer than this (in characters) are wrapped. */
const LABEL_CHARS = 64;
const TITLE_CHARS = 120;
const MAX_TEXT_LINES = 32;
const MAX_LINE_CHARS = 1000;
const MISSING_TEXT = 'no face';

type Rgb = readonly [number, number, number];
const BACKGROUND: Rgb = [250, 250, 250];
const HEADER_BACKGROUND: Rgb = [230, 233, 238];
const TEXT: Rgb = [20, 20, 20];
const COLUMN_TEXT: Rgb = [60, 60, 60];
const LETTERBOX: Rgb = [48, 48, 48];
const MISSING: Rgb = [170, 170, 170];
const SEPARATOR: Rgb = [215, 215, 215];

/** An axis-aligned rectangle in sheet pixels. */
export interface Rect {
  x: number;
  y: number;
  width: number;
  height: number;
}

/** Lines of text whose first glyph box starts at (x, y); lines are LINE_H apart. */
export interface TextBlock {
  x: number;
  y: number;
  lines: string[];
}

export interface TileLayout {
  /** The tileSize square. */
  cell: Rect;
  /** Where the scaled frame goes inside the cell (centred, aspect kept); null for a missing frame. */
  image: Rect | null;
}

export interface RowLayout {
  /** The row's band: the tiles and the label. */
  band: Rect;
  tiles: TileLayout[];
  /** The label text area (the label column beside the tiles, over the band's height). */
  labelArea: Rect;
  label: TextBlock;
}

export interface SheetLayout {
  width: number;
  height: number;
  tileSize: number;
  /** The header band (title lines), full width. */
  header: Rect;
  title: TextBlock;
  /** One per column, centred over its tiles. */
  columnHeaders: TextBlock[];
  rows: RowLayout[];
}

/**
 * Computes where everything goes. Validates the spec the same way as renderContactSheet.
 * @throws TypeError on a malformed spec or one over the size limits.
 */
export function layoutContactSheet(spec: SheetSpec): SheetLayout {
  validateSpec(spec);
  const tileSize = spec.tileSize ?? DEFAULT_TILE_SIZE;
  const nCols = spec.columns.length;
  const title = spec.title.flatMap((l) => wrapText(l, TITLE_CHARS));
  checkLineCount(title, 'title');
  const labels = spec.rows.map((row, r) => {
    const lines = (typeof row.label === 'string' ? [row.label] : row.label).flatMap((l) => wrapText(l, LABEL_CHARS));
    checkLineCount(lines, `row ${r} label`);
    return lines;
  });
  const labelChars = Math.max(0, ...labels.flatMap((ls) => ls.map((l) => l.length)));
  const tilesWidth = nCols * tileSize + (nCols - 1) * TILE_GAP;
  const labelX = MARGIN + tilesWidth + LABEL_GAP;
  const width = Math.max(
    MARGIN + tilesWidth + (labelChars > 0 ? LABEL_GAP + labelChars * CHAR_W : 0) + MARGIN,
    MARGIN + Math.max(0, ...title.map((l) => l.length)) * CHAR_W + MARGIN,
  );

  const headerHeight = MARGIN + Math.max(1, title.length) * LINE_H + MARGIN - SCALE;
  const header: Rect = { x: 0, y: 0, width, height: headerHeight };
  const colY = headerHeight + HEADER_GAP;
  const colChars = Math.floor((tileSize + TILE_GAP) / CHAR_W);
  const columnHeaders = spec.columns.map((name, c) => {
    const text = sanitize(name).slice(0, colChars);
    const cellX = MARGIN + c * (tileSize + TILE_GAP);
    return { x: cellX + Math.floor((tileSize - text.length * CHAR_W + SCALE) / 2), y: colY, lines: text ? [text] : [] };
  });

  let y = colY + LINE_H + HEADER_GAP / 2;
  const rows = spec.rows.map((row, r): RowLayout => {
    const lines = labels[r]!;
    const bandHeight = Math.max(tileSize, lines.length * LINE_H);
    const tiles = row.tiles.map((tile, c): TileLayout => {
      const cell = { x: MARGIN + c * (tileSize + TILE_GAP), y, width: tileSize, height: tileSize };
      return { cell, image: tile ? fitInside(tile.width, tile.height, cell) : null };
    });
    const layout: RowLayout = {
      band: { x: MARGIN, y, width: width - 2 * MARGIN, height: bandHeight },
      tiles,
      labelArea: { x: labelX, y, width: Math.max(0, width - MARGIN - labelX), height: bandHeight },
      label: { x: labelX, y, lines },
    };
    y += bandHeight + ROW_GAP;
    return layout;
  });
  const height = y - ROW_GAP + MARGIN;
  if (width * height > MAX_SHEET_PIXELS) {
    throw new TypeError(
      `contact sheet: ${width}x${height} pixels is over the limit of ${MAX_SHEET_PIXELS}; use fewer rows or a smaller tileSize`,
    );
  }
  return { width, height, tileSize, header, title: { x: MARGIN, y: MARGIN, lines: title }, columnHeaders, rows };
}

/**
 * Renders the contact sheet to PNG bytes.
 * @throws TypeError on a malformed spec (see SheetSpec) or one over the size limits.
 */
export async function renderContactSheet(spec: SheetSpec): Promise<Buffer> {
  const layout = layoutContactSheet(spec);
  const { width, height } = layout;
  const canvas: Canvas = { width, height, data: new Uint8Array(width * height * 3) };
  fillRect(canvas, { x: 0, y: 0, width, height }, BACKGROUND);
  fillRect(canvas, layout.header, HEADER_BACKGROUND);
  drawBlock(canvas, layout.title, TEXT);
  for (const block of layout.columnHeaders) drawBlock(canvas, block, COLUMN_TEXT);

  // Scale all tiles at once (sharp works off the main thread) with sharp's lanczos3, not util/image resizeRgb: a plain
  // bilinear aliases on strong downscales (a 720p frame into 192 px), and the reviewer should see the frame's own
  // artefacts, not resampling ones.
  const scaled = await Promise.all(
    spec.rows.map((row, r) =>
      Promise.all(
        row.tiles.map((tile, c) => (tile ? scaleTile(tile, layout.rows[r]!.tiles[c]!.image!) : Promise.resolve(null))),
      ),
    ),
  );

  layout.rows.forEach((row, r) => {
    if (r > 0) {
      const sepY = row.band.y - Math.ceil(ROW_GAP / 2);
      fillRect(canvas, { x: MARGIN, y: sepY, width: width - 2 * MARGIN, height: 1 }, SEPARATOR);
    }
    row.tiles.forEach((tile, c) => {
      const pixels = scaled[r]![c];
      if (tile.image && pixels) {
        fillRect(canvas, tile.cell, LETTERBOX);
        blit(canvas, pixels, tile.image);
      } else {
        fillRect(canvas, tile.cell, MISSING);
        const lines = wrapText(MISSING_TEXT, Math.floor((tile.cell.width - 2 * SCALE) / CHAR_W));
        const blockH = lines.length * LINE_H - SCALE;
        for (const [i, line] of lines.entries()) {
          const x = tile.cell.x + Math.floor((tile.cell.width - line.length * CHAR_W + SCALE) / 2);
          drawText(canvas, x, tile.cell.y + Math.floor((tile.cell.height - blockH) / 2) + i * LINE_H, line, TEXT);
        }
      }
    });
    drawBlock(canvas, row.label, TEXT);
  });

  return sharp(Buffer.from(canvas.data.buffer, canvas.data.byteOffset, canvas.data.length), {
    raw: { width, height, channels: 3 },
  })
    .png()
    .toBuffer();
}

/**
 * Renders the sheet and writes it to `file` (a .png path) under a temporary name in the same folder, then renames it,
 * so that a reader never sees a half-written sheet; the temporary file is removed on failure.
 * @throws TypeError on a malformed spec or a file name not ending in .png.
 */
export async function writeContactSheet(file: string, spec: SheetSpec): Promise<void> {
  if (typeof file !== 'string' || path.extname(file).toLowerCase() !== '.png') {
    throw new TypeError('writeContactSheet: the file name must end in .png');
  }
  const png = await renderContactSheet(spec);
  const tmp = path.join(
    path.dirname(file),
    `.${path.basename(file)}.partial-${process.pid}-${randomBytes(4).toString('hex')}`,
  );
  try {
    await writeFile(tmp, png);
    await rename(tmp, file);
  } finally {
    await rm(tmp, { force: true });
  }
}

// ---- validation ----

function validateSpec(spec: unknown): asserts spec is SheetSpec {
  if (!isRecord(spec)) throw new TypeError('contact sheet: spec must be an object');
  const { title, columns, rows, tileSize } = spec;
  if (!isStringArray(title)) throw new TypeError('contact sheet: title must be an array of strings');
  for (const line of title) checkLine(line, 'title');
  if (!isStringArray(columns) || columns.length < 1 || columns.length > MAX_COLUMNS) {
    throw new TypeError(`contact sheet: columns must be 1 to ${MAX_COLUMNS} strings`);
  }
  if (!isArray(rows)) throw new TypeError('contact sheet: rows must be an array');
  if (rows.length > MAX_ROWS) {
    throw new TypeError(`contact sheet: ${rows.length} rows is over the limit of ${MAX_ROWS}; sample fewer frames`);
  }
  if (
    tileSize !== undefined &&
    !(
      typeof tileSize === 'number' &&
      Number.isInteger(tileSize) &&
      tileSize >= MIN_TILE_SIZE &&
      tileSize <= MAX_TILE_SIZE
    )
  ) {
    throw new TypeError(
      `contact sheet: tileSize must be an integer from ${MIN_TILE_SIZE} to ${MAX_TILE_SIZE} (got ${typeof tileSize === 'number' ? tileSize : typeof tileSize})`,
    );
  }
  rows.forEach((row, r) => {
    if (!isRecord(row)) throw new TypeError(`contact sheet: row ${r} must be an object`);
    const { tiles, label } = row;
    if (!isArray(tiles) || tiles.length !== columns.length) {
      throw new TypeError(`contact sheet: row ${r} must have ${columns.length} tiles, one per column`);
    }
    tiles.forEach((tile, c) => {
      if (tile !== null) checkTile(tile, `row ${r} tile ${c}`);
    });
    const lines = typeof label === 'string' ? [label] : label;
    if (!isStringArray(lines)) throw new TypeError(`contact sheet: row ${r} label must be a string or strings`);
    for (const line of lines) checkLine(line, `row ${r} label`);
  });
}

function checkTile(tile: unknown, where: string): void {
  if (!isRecord(tile)) throw new TypeError(`contact sheet: ${where} must be an RgbImage or null`);
  const { width, height, data } = tile;
  const okSide = (v: unknown): v is number =>
    Number.isInteger(v) && (v as number) >= 1 && (v as number) <= MAX_SOURCE_SIDE;
  if (!okSide(width) || !okSide(height)) {
    throw new TypeError(`contact sheet: ${where} size must be integers from 1 to ${MAX_SOURCE_SIDE}`);
  }
  if (!(data instanceof Uint8Array) || data.length !== width * height * 3) {
    throw new TypeError(
      `contact sheet: ${where} data must be a Uint8Array of width*height*3 = ${width * height * 3} bytes`,
    );
  }
}

/** Text blocks are limited after wrapping, so that one long label cannot make a row arbitrarily tall. */
function checkLineCount(lines: readonly string[], where: string): void {
  if (lines.length > MAX_TEXT_LINES) {
    throw new TypeError(`contact sheet: ${where} has ${lines.length} lines after wrapping, over ${MAX_TEXT_LINES}`);
  }
}

function checkLine(line: string, where: string): void {
  if (line.length > MAX_LINE_CHARS) {
    throw new TypeError(`contact sheet: ${where} line over ${MAX_LINE_CHARS} characters`);
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null;
}

function isArray(v: unknown): v is readonly unknown[] {
  return Array.isArray(v);
}

function isStringArray(v: unknown): v is readonly string[] {
  return isArray(v) && v.every((s) => typeof s === 'string');
}

// ---- text ----

/** Printable ASCII only (the font's range); tabs become spaces, anything else '?'. */
function sanitize(s: string): string {
  return s.replace(/\t/g, ' ').replace(/[^\x20-\x7e]/g, '?');
}

/**
 * Splits on newlines, then wraps each line to `max` characters: at the last " | " that fits (the separator of score
 * groups), else at the last space, else hard.
 */
function wrapText(text: string, max: number): string[] {
  const out: string[] = [];
  const width = Math.max(1, max);
  for (const line of text.split(/\r?\n/)) {
    let rest = sanitize(line).trimEnd();
    while (rest.length > width) {
      let cut = rest.lastIndexOf(' | ', width);
      let skip = 3;
      if (cut <= 0) {
        cut = rest.lastIndexOf(' ', width);
        skip = 1;
      }
      if (cut <= 0) {
        cut = width;
        skip = 0;
      }
      out.push(rest.slice(0, cut));
      rest = rest.slice(cut + skip);
    }
    out.push(rest);
  }
  return out;
}

// ---- drawing ----

interface Canvas {
  width: number;
  height: number;
  data: Uint8Array;
}

function fillRect(canvas: Canvas, rect: Rect, color: Rgb): void {
  const x0 = Math.max(0, rect.x);
  const x1 = Math.min(canvas.width, rect.x + rect.width);
  const y0 = Math.max(0, rect.y);
  const y1 = Math.min(canvas.height, rect.y + rect.height);
  const d = canvas.data;
  for (let y = y0; y < y1; y++) {
    for (let o = (y * canvas.width + x0) * 3, end = (y * canvas.width + x1) * 3; o < end; o += 3) {
      d[o] = color[0];
      d[o + 1] = color[1];
      d[o + 2] = color[2];
    }
  }
}

/** Copies packed RGB of rect's size to rect (rect lies inside the canvas by construction). */
function blit(canvas: Canvas, pixels: Uint8Array, rect: Rect): void {
  const rowBytes = rect.width * 3;
  for (let y = 0; y < rect.height; y++) {
    canvas.data.set(pixels.subarray(y * rowBytes, (y + 1) * rowBytes), ((rect.y + y) * canvas.width + rect.x) * 3);
  }
}

function drawBlock(canvas: Canvas, block: TextBlock, color: Rgb): void {
  block.lines.forEach((line, i) => drawText(canvas, block.x, block.y + i * LINE_H, line, color));
}

function drawText(canvas: Canvas, x: number, y: number, text: string, color: Rgb): void {
  for (let i = 0; i < text.length; i++) {
    const glyph = FONT.get(text[i]!) ?? FONT.get('?')!;
    const gx = x + i * CHAR_W;
    for (let row = 0; row < GLYPH_H; row++) {
      const bits = glyph[row]!;
      for (let col = 0; col < GLYPH_W; col++) {
        if (bits & (1 << (GLYPH_W - 1 - col))) {
          fillRect(canvas, { x: gx + col * SCALE, y: y + row * SCALE, width: SCALE, height: SCALE }, color);
        }
      }
    }
  }
}

/** The largest rect of the source's aspect that fits inside `cell`, centred (at least 1×1). */
function fitInside(width: number, height: number, cell: Rect): Rect {
  const s = Math.min(cell.width / width, cell.height / height);
  const w = Math.min(cell.width, Math.max(1, Math.round(width * s)));
  const h = Math.min(cell.height, Math.max(1, Math.round(height * s)));
  return { x: cell.x + ((cell.width - w) >> 1), y: cell.y + ((cell.height - h) >> 1), width: w, height: h };
}

async function scaleTile(tile: RgbImage, to: Rect): Promise<Uint8Array> {
  if (tile.width === to.width && tile.height === to.height) return tile.data;
  const { data, info } = await sharp(Buffer.from(tile.data.buffer, tile.data.byteOffset, tile.data.length), {
    raw: { width: tile.width, height: tile.height, channels: 3 },
  })
    .resize(to.width, to.height, { fit: 'fill' })
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 || info.width !== to.width || info.height !== to.height) {
    throw new Error(`contact sheet: unexpected resize output ${info.width}x${info.height}x${info.channels}`);
  }
  return data;
}

// ---- font ----

/**
 * 5×9 glyphs, drawn by hand for this sheet: rows top to bottom, '#' = ink; capitals and digits use rows 0-6 (the
 * baseline is row 6), descenders rows 7-8; missing trailing rows are blank. '1' has a long flag and foot and 'l' a hook, so that
 * "l1" (a score name) does not read as "ll".
 */
const GLYPHS: Readonly<Record<string, string>> = {
  ' ': '',
  '!': '..#..|..#..|..#..|..#..|..#..|.....|..#..',
  '"': '.#.#.|.#.#.|.#.#.',
  '#': '.#.#.|.#.#.|#####|.#.#.|#####|.#.#.|.#.#.',
  $: '..#..|.####|#.#..|.###.|..#.#|####.|..#..',
  '%': '##...|##..#|...#.|..#..|.#...|#..##|...##',
  '&': '.##..|#..#.|#.#..|.#...|#.#.#|#..#.|.##.#',
  "'": '..#..|..#..|.#...',
  '(': '...#.|..#..|.#...|.#...|.#...|..#..|...#.',
  ')': '.#...|..#..|...#.|...#.|...#.|..#..|.#...',
  '*': '.....|..#..|#.#.#|.###.|#.#.#|..#..',
  '+': '.....|..#..|..#..|#####|..#..|..#..',
  ',': '.....|.....|.....|.....|.....|.##..|.##..|..#..|.#...',
  '-': '.....|.....|.....|#####',
  '.': '.....|.....|.....|.....|.....|.##..|.##..',
  '/': '.....|....#|...#.|..#..|.#...|#....',
  '0': '.###.|#...#|#..##|#.#.#|##..#|#...#|.###.',
  '1': '..#..|.##..|#.#..|..#..|..#..|..#..|#####',
  '2': '.###.|#...#|....#|...#.|..#..|.#...|#####',
  '3': '#####|...#.|..#..|...#.|....#|#...#|.###.',
  '4': '...#.|..##.|.#.#.|#..#.|#####|...#.|...#.',
  '5': '#####|#....|####.|....#|....#|#...#|.###.',
  '6': '..##.|.#...|#....|####.|#...#|#...#|.###.',
  '7': '#####|....#|...#.|..#..|.#...|.#...|.#...',
  '8': '.###.|#...#|#...#|.###.|#...#|#...#|.###.',
  '9': '.###.|#...#|#...#|.####|....#|...#.|.##..',
  ':': '.....|.##..|.##..|.....|.##..|.##..',
  ';': '.....|.##..|.##..|.....|.##..|.##..|..#..|.#...',
  '<': '...#.|..#..|.#...|#....|.#...|..#..|...#.',
  '=': '.....|.....|#####|.....|#####',
  '>': '.#...|..#..|...#.|....#|...#.|..#..|.#...',
  '?': '.###.|#...#|....#|...#.|..#..|.....|..#..',
  '@': '.###.|#...#|....#|.##.#|#.#.#|#.#.#|.###.',
  A: '.###.|#...#|#...#|#####|#...#|#...#|#...#',
  B: '####.|#...#|#...#|####.|#...#|#...#|####.',
  C: '.###.|#...#|#....|#....|#....|#...#|.###.',
  D: '###..|#..#.|#...#|#...#|#...#|#..#.|###..',
  E: '#####|#....|#....|####.|#....|#....|#####',
  F: '#####|#....|#....|####.|#....|#....|#....',
  G: '.###.|#...#|#....|#.###|#...#|#...#|.####',
  H: '#...#|#...#|#...#|#####|#...#|#...#|#...#',
  I: '.###.|..#..|..#..|..#..|..#..|..#..|.###.',
  J: '..###|...#.|...#.|...#.|...#.|#..#.|.##..',
  K: '#...#|#..#.|#.#..|##...|#.#..|#..#.|#...#',
  L: '#....|#....|#....|#....|#....|#....|#####',
  M: '#...#|##.##|#.#.#|#.#.#|#...#|#...#|#...#',
  N: '#...#|#...#|##..#|#.#.#|#..##|#...#|#...#',
  O: '.###.|#...#|#...#|#...#|#...#|#...#|.###.',
  P: '####.|#...#|#...#|####.|#....|#....|#....',
  Q: '.###.|#...#|#...#|#...#|#.#.#|#..#.|.##.#',
  R: '####.|#...#|#...#|####.|#.#..|#..#.|#...#',
  S: '.####|#....|#....|.###.|....#|....#|####.',
  T: '#####|..#..|..#..|..#..|..#..|..#..|..#..',
  U: '#...#|#...#|#...#|#...#|#...#|#...#|.###.',
  V: '#...#|#...#|#...#|#...#|#...#|.#.#.|..#..',
  W: '#...#|#...#|#...#|#.#.#|#.#.#|#.#.#|.#.#.',
  X: '#...#|#...#|.#.#.|..#..|.#.#.|#...#|#...#',
  Y: '#...#|#...#|.#.#.|..#..|..#..|..#..|..#..',
  Z: '#####|....#|...#.|..#..|.#...|#....|#####',
  '[': '.###.|.#...|.#...|.#...|.#...|.#...|.###.',
  '\\': '.....|#....|.#...|..#..|...#.|....#',
  ']': '.###.|...#.|...#.|...#.|...#.|...#.|.###.',
  '^': '..#..|.#.#.|#...#',
  _: '.....|.....|.....|.....|.....|.....|.....|#####',
  '`': '.#...|..#..|...#.',
  a: '.....|.....|.###.|....#|.####|#...#|.####',
  b: '#....|#....|#.##.|##..#|#...#|#...#|####.',
  c: '.....|.....|.###.|#....|#....|#...#|.###.',
  d: '....#|....#|.##.#|#..##|#...#|#...#|.####',
  e: '.....|.....|.###.|#...#|#####|#....|.###.',
  f: '..##.|.#..#|.#...|###..|.#...|.#...|.#...',
  g: '.....|.....|.####|#...#|#...#|#...#|.####|....#|.###.',
  h: '#....|#....|#.##.|##..#|#...#|#...#|#...#',
  i: '..#..|.....|.##..|..#..|..#..|..#..|.###.',
  j: '...#.|.....|..##.|...#.|...#.|...#.|...#.|#..#.|.##..',
  k: '#....|#....|#..#.|#.#..|##...|#.#..|#..#.',
  l: '.#...|.#...|.#...|.#...|.#...|.#...|..##.',
  m: '.....|.....|##.#.|#.#.#|#.#.#|#.#.#|#.#.#',
  n: '.....|.....|#.##.|##..#|#...#|#...#|#...#',
  o: '.....|.....|.###.|#...#|#...#|#...#|.###.',
  p: '.....|.....|####.|#...#|#...#|#...#|####.|#....|#....',
  q: '.....|.....|.####|#...#|#...#|#...#|.####|....#|....#',
  r: '.....|.....|#.##.|##..#|#....|#....|#....',
  s: '.....|.....|.####|#....|.###.|....#|####.',
  t: '.#...|.#...|###..|.#...|.#...|.#..#|..##.',
  u: '.....|.....|#...#|#...#|#...#|#..##|.##.#',
  v: '.....|.....|#...#|#...#|#...#|.#.#.|..#..',
  w: '.....|.....|#...#|#...#|#.#.#|#.#.#|.#.#.',
  x: '.....|.....|#...#|.#.#.|..#..|.#.#.|#...#',
  y: '.....|.....|#...#|#...#|#...#|#...#|.####|....#|.###.',
  z: '.....|.....|#####|...#.|..#..|.#...|#####',
  '{': '...#.|..#..|..#..|.#...|..#..|..#..|...#.',
  '|': '..#..|..#..|..#..|..#..|..#..|..#..|..#..|..#..',
  '}': '.#...|..#..|..#..|...#.|..#..|..#..|.#...',
  '~': '.....|.....|.#...|#.#.#|...#.',
};

/** Glyph rows as bit masks (bit 4 = leftmost column), GLYPH_H per character. */
const FONT: ReadonlyMap<string, readonly number[]> = new Map(
  Object.entries(GLYPHS).map(([ch, art]) => {
    const rows = art ? art.split('|') : [];
    return [
      ch,
      Array.from({ length: GLYPH_H }, (_, i) =>
        parseInt((rows[i] ?? '.....').replace(/\./g, '0').replace(/#/g, '1'), 2),
      ),
    ];
  }),
);
