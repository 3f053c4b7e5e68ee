import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { RgbImage } from '../../server/types/image.js';
import {
  layoutContactSheet,
  MAX_ROWS,
  renderContactSheet,
  writeContactSheet,
  type Rect,
  type SheetSpec,
} from '../../server/quality/sheet.js';

type Rgb = [number, number, number];
const RED: Rgb = [220, 20, 20];
const GREEN: Rgb = [20, 180, 40];
const BLUE: Rgb = [30, 40, 210];

function solid(width: number, height: number, color: Rgb): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) data.set(color, i * 3);
  return { width, height, data };
}

async function decode(png: Buffer): Promise<RgbImage> {
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  expect(info.channels).toBe(3);
  return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
}

function pixel(img: RgbImage, x: number, y: number): Rgb {
  const o = (y * img.width + x) * 3;
  return [img.data[o]!, img.data[o + 1]!, img.data[o + 2]!];
}

function maxDiff(a: Rgb, b: Rgb): number {
  return Math.max(...a.map((v, i) => Math.abs(v - b[i]!)));
}

/** Text is near black (20) or dark grey (60); nothing else drawn outside the tiles is that dark. */
function darkPixels(img: RgbImage, r: Rect): number {
  let n = 0;
  for (let y = r.y; y < r.y + r.height; y++) {
    for (let x = r.x; x < r.x + r.width; x++) if (Math.max(...pixel(img, x, y)) < 100) n++;
  }
  return n;
}

function centre(r: Rect): [number, number] {
  return [r.x + Math.floor(r.width / 2), r.y + Math.floor(r.height / 2)];
}

/** Three rows: square, wide, missing; tall, small (upscaled), exact size; and one with a multi-line label. */
function spec(): SheetSpec {
  return {
    title: ['self | engine default | man_mouth_wide_open.mp4', 'l1 0.041 / 0.083 | ssim 0.81 / 0.74'],
    columns: ['driver', 'frozen', 'output'],
    rows: [
      {
        tiles: [solid(256, 256, RED), solid(300, 100, GREEN), null],
        label: 'frame 62 | l1 0.041 / 0.083 | ssim 0.81 / 0.74 | id 0.71 / 0.93 | mouth_l1 0.09 / 0.21',
      },
      { tiles: [solid(100, 300, BLUE), solid(64, 64, GREEN), solid(192, 192, RED)], label: '' },
      { tiles: [solid(40, 30, GREEN), solid(1280, 720, BLUE), solid(512, 512, RED)], label: ['frame 124', 'l1 0.05'] },
    ],
  };
}

describe('contact sheet', () => {
  it('lays out a header, column headers and one band per row, and the PNG has the layout size', async () => {
    const s = spec();
    const layout = layoutContactSheet(s);
    const png = await renderContactSheet(s);
    expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
    const img = await decode(png);
    expect([img.width, img.height]).toEqual([layout.width, layout.height]);

    expect(layout.tileSize).toBe(192);
    expect(layout.columnHeaders.map((c) => c.lines)).toEqual([['driver'], ['frozen'], ['output']]);
    expect(layout.rows).toHaveLength(3);
    let bottom = layout.header.y + layout.header.height;
    for (const row of layout.rows) {
      expect(row.band.y).toBeGreaterThan(bottom); // bands follow each other without overlapping
      bottom = row.band.y + row.band.height;
      row.tiles.forEach((t, c) => {
        expect(t.cell).toEqual({ ...layout.rows[0]!.tiles[c]!.cell, y: row.band.y }); // columns line up
        expect([t.cell.width, t.cell.height]).toEqual([192, 192]);
      });
      expect(row.labelArea.x).toBeGreaterThan(row.tiles[2]!.cell.x + 192); // labels right of the tiles
    }
    expect(bottom).toBeLessThan(layout.height);
    expect(layout.width).toBeGreaterThanOrEqual(layout.rows[0]!.labelArea.x + layout.rows[0]!.labelArea.width);

    // Aspect kept, centred in the square: 300x100 -> 192x64, 100x300 -> 64x192, small ones scaled up.
    const [r0, r1, r2] = [layout.rows[0]!, layout.rows[1]!, layout.rows[2]!];
    const cell = r0.tiles[1]!.cell;
    expect(r0.tiles[1]!.image).toEqual({ x: cell.x, y: cell.y + 64, width: 192, height: 64 });
    expect(r1.tiles[0]!.image).toMatchObject({ y: r1.band.y, width: 64, height: 192 });
    expect(r1.tiles[1]!.image).toEqual(r1.tiles[1]!.cell);
    expect(r2.tiles[0]!.image).toMatchObject({ width: 192, height: 144 });
    expect(r2.tiles[1]!.image).toMatchObject({ width: 192, height: 108 });
    expect(r0.tiles[2]!.image).toBeNull();

    // The long label is wrapped at a " | " separator into lines that fit; the others are kept as given.
    expect(r0.label.lines.length).toBe(2);
    expect(r0.label.lines.join(' | ')).toBe(s.rows[0]!.label);
    expect(r1.label.lines).toEqual(['']);
    expect(r2.label.lines).toEqual(['frame 124', 'l1 0.05']);
  });

  it('draws each frame in its square, letterboxed, and a grey "no face" tile for a missing frame', async () => {
    const s = spec();
    const layout = layoutContactSheet(s);
    const img = await decode(await renderContactSheet(s));
    const expected: (Rgb | null)[][] = [
      [RED, GREEN, null],
      [BLUE, GREEN, RED],
      [GREEN, BLUE, RED],
    ];
    layout.rows.forEach((row, r) =>
      row.tiles.forEach((t, c) => {
        const colour = expected[r]![c]!;
        if (colour === null) return;
        expect(maxDiff(pixel(img, ...centre(t.image!)), colour)).toBeLessThanOrEqual(2);
        // Near the image's own corners too (the colour fills the whole fitted rect).
        expect(maxDiff(pixel(img, t.image!.x + 2, t.image!.y + 2), colour)).toBeLessThanOrEqual(2);
      }),
    );

    // Letterbox bars: dark grey above the wide tile and left of the tall one, not the tile's colour.
    const wide = layout.rows[0]!.tiles[1]!;
    const bar = pixel(img, wide.cell.x + 96, wide.cell.y + 10);
    expect(maxDiff(bar, GREEN)).toBeGreaterThan(50);
    expect(Math.max(...bar)).toBeLessThan(100);
    const tall = layout.rows[1]!.tiles[0]!;
    expect(maxDiff(pixel(img, tall.cell.x + 10, tall.cell.y + 96), BLUE)).toBeGreaterThan(50);

    // The missing frame: a light grey square with dark text in the middle.
    const missing = layout.rows[0]!.tiles[2]!.cell;
    const grey = pixel(img, missing.x + 4, missing.y + 4);
    expect(grey[0]).toBe(grey[1]);
    expect(grey[1]).toBe(grey[2]);
    expect(grey[0]).toBeGreaterThan(120);
    expect(darkPixels(img, { x: missing.x, y: missing.y + 64, width: 192, height: 64 })).toBeGreaterThan(50);
    expect(darkPixels(img, { x: missing.x, y: missing.y, width: 192, height: 48 })).toBe(0);
  });

  it('draws text where there is some and nothing where a label is empty', async () => {
    const s = spec();
    const layout = layoutContactSheet(s);
    const img = await decode(await renderContactSheet(s));
    const [r0, r1, r2] = [layout.rows[0]!, layout.rows[1]!, layout.rows[2]!];
    expect(darkPixels(img, layout.header)).toBeGreaterThan(500);
    for (const [c, t] of r0.tiles.entries()) {
      const above = { x: t.cell.x, y: layout.columnHeaders[c]!.y, width: t.cell.width, height: 20 };
      expect(darkPixels(img, above)).toBeGreaterThan(50);
    }
    expect(darkPixels(img, r0.labelArea)).toBeGreaterThan(1000); // two long lines
    expect(darkPixels(img, r2.labelArea)).toBeGreaterThan(100);
    expect(r1.labelArea.width * r1.labelArea.height).toBeGreaterThan(0);
    expect(darkPixels(img, r1.labelArea)).toBe(0);
    // The label's first line sits at the top of the band, the second below it.
    const line = (block: Rect): number => darkPixels(img, block);
    const { x, y, width } = r2.labelArea;
    expect(line({ x, y, width, height: 20 })).toBeGreaterThan(50);
    expect(line({ x, y: y + 20, width, height: 20 })).toBeGreaterThan(50);
    expect(line({ x, y: y + 40, width, height: r2.labelArea.height - 40 })).toBe(0);
  });

  it('draws different text differently, the same text the same, and other than ASCII as "?"', async () => {
    const sheet = async (label: string): Promise<Buffer> =>
      renderContactSheet({ title: [], columns: ['x'], rows: [{ tiles: [null], label }], tileSize: 64 });
    const [a, b, a2, accent, question] = await Promise.all(
      ['frame 1', 'frame 7', 'frame 1', 'café', 'caf?'].map(sheet),
    );
    expect(a!.equals(a2!)).toBe(true);
    expect(a!.equals(b!)).toBe(false);
    expect(accent!.equals(question!)).toBe(true);
  });

  it('renders a sheet with just the header when there are no rows', async () => {
    const s: SheetSpec = { title: ['nothing sampled'], columns: ['driver', 'frozen', 'output'], rows: [] };
    const layout = layoutContactSheet(s);
    const img = await decode(await renderContactSheet(s));
    expect([img.width, img.height]).toEqual([layout.width, layout.height]);
    expect(layout.rows).toEqual([]);
    expect(img.height).toBeLessThan(120);
    expect(darkPixels(img, layout.header)).toBeGreaterThan(100);
  });

  it('rejects bad input with a TypeError', async () => {
    const tile = solid(8, 8, RED);
    const row = { tiles: [tile], label: 'x' };
    const bad: [string, unknown][] = [
      ['not an object', null],
      ['title not an array', { title: 'x', columns: ['a'], rows: [] }],
      ['no columns', { title: [], columns: [], rows: [] }],
      ['too many rows', { title: [], columns: ['a'], rows: Array.from({ length: MAX_ROWS + 1 }, () => row) }],
      ['tileSize over 512', { title: [], columns: ['a'], rows: [row], tileSize: 513 }],
      ['tileSize not an integer', { title: [], columns: ['a'], rows: [row], tileSize: 100.5 }],
      ['tileSize 0', { title: [], columns: ['a'], rows: [row], tileSize: 0 }],
      [
        'tile data too short',
        { title: [], columns: ['a'], rows: [{ tiles: [{ ...tile, data: tile.data.subarray(1) }], label: '' }] },
      ],
      [
        'tile width 0',
        { title: [], columns: ['a'], rows: [{ tiles: [{ width: 0, height: 8, data: new Uint8Array(0) }], label: '' }] },
      ],
      [
        'tile data not bytes',
        { title: [], columns: ['a'], rows: [{ tiles: [{ ...tile, data: [1, 2, 3] }], label: '' }] },
      ],
      ['tiles not one per column', { title: [], columns: ['a', 'b'], rows: [row] }],
      ['label a number', { title: [], columns: ['a'], rows: [{ tiles: [tile], label: 3 }] }],
      ['a huge line', { title: ['x'.repeat(5000)], columns: ['a'], rows: [] }],
      ['too many columns', { title: [], columns: Array.from({ length: 9 }, () => 'c'), rows: [] }],
      [
        'a label too tall',
        { title: [], columns: ['a'], rows: [{ tiles: [tile], label: Array.from({ length: 40 }, () => 'l') }] },
      ],
    ];
    for (const [what, s] of bad) {
      expect(() => layoutContactSheet(s as SheetSpec), what).toThrow(TypeError);
      await expect(renderContactSheet(s as SheetSpec), what).rejects.toThrow(TypeError);
    }
    await expect(renderContactSheet({ title: [], columns: ['a'], rows: [], tileSize: 513 })).rejects.toThrow(
      /tileSize must be an integer from 64 to 512/,
    );
  });

  describe('writeContactSheet', () => {
    let dir: string;
    beforeEach(async () => {
      dir = await mkdtemp(path.join(os.tmpdir(), 'sheet-test-'));
    });
    afterEach(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('writes a readable PNG under its name and leaves no temporary file', async () => {
      const s = spec();
      const file = path.join(dir, 'sheet.png');
      await writeContactSheet(file, s);
      expect(await readdir(dir)).toEqual(['sheet.png']);
      const bytes = await readFile(file);
      const meta = await sharp(bytes).metadata();
      const layout = layoutContactSheet(s);
      expect([meta.format, meta.width, meta.height]).toEqual(['png', layout.width, layout.height]);
      expect(bytes.equals(await renderContactSheet(s))).toBe(true);

      // Overwrites an existing sheet in place.
      await writeContactSheet(file, { title: ['second'], columns: ['a'], rows: [] });
      expect(await readdir(dir)).toEqual(['sheet.png']);
      expect((await sharp(file).metadata()).height).toBeLessThan(layout.height);
    });

    it('writes nothing on bad input, a name without .png or a missing folder', async () => {
      await expect(writeContactSheet(path.join(dir, 'a.png'), { ...spec(), tileSize: 1000 })).rejects.toThrow(
        TypeError,
      );
      await expect(writeContactSheet(path.join(dir, 'a.jpg'), spec())).rejects.toThrow(TypeError);
      await expect(writeContactSheet(path.join(dir, 'missing', 'a.png'), spec())).rejects.toThrow();
      expect(await readdir(dir)).toEqual([]);
    });
  });
});
