/**
 * `npm run fetch-test-data`'s download, for real: a node:http server on port 0 plays GitHub (same paths,
 * `<owner>/<repo>/raw/<commit>/<path>`) out of a temp copy of the media folder, and the files land in a temp folder.
 * The derived clip's stand-in origin is our own copy, so re-deriving it gives other bytes: the re-derived path.
 */
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { FetchError, fetchTestData, originUrl } from '../../scripts/fetch-test-data.js';
import {
  checkMedia,
  loadManifest,
  mediaDir,
  readFetchReport,
  REPORT_NAME,
  type Manifest,
  type ManifestEntry,
} from '../../scripts/testData.js';
import { isPortFree } from '../helpers/net.js';

/** A local stand-in for github.com serving the manifest's origin paths. */
interface Origin {
  baseUrl: string;
  port: number;
  /** Requests per manifest path. */
  hits: Map<string, number>;
  /** Bytes to serve instead of the file (a corrupted download), or 404. */
  override: Map<string, Buffer | 404>;
  /** Idempotent. */
  close(): Promise<void>;
}

async function startOrigin(root: string, manifest: Manifest): Promise<Origin> {
  const byUrlPath = new Map(manifest.files.map((e) => [new URL(originUrl(e, 'http://x')).pathname, e]));
  const hits = new Map<string, number>();
  const override = new Map<string, Buffer | 404>();
  const server = http.createServer((req, res) => {
    const entry = byUrlPath.get(new URL(req.url ?? '/', 'http://x').pathname);
    if (entry) hits.set(entry.path, (hits.get(entry.path) ?? 0) + 1);
    const body = entry ? (override.get(entry.path) ?? path.join(root, entry.path)) : 404;
    if (body === 404) {
      res.writeHead(404).end('Not Found');
      return;
    }
    void (typeof body === 'string' ? readFile(body) : Promise.resolve(body)).then((bytes) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bytes.length });
      res.end(bytes);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  let closing: Promise<void> | undefined;
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    port,
    hits,
    override,
    close: () =>
      (closing ??= new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err ? reject(err) : resolve()));
      })),
  };
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Everything in a folder, recursively, temp files included. */
async function allFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => path.relative(dir, path.join(e.parentPath, e.name)));
}

let manifest: Manifest;
let source: string;
let origin: Origin;
let dest: string;
let log: string[];
const entry = (p: string): ManifestEntry => manifest.files.find((e) => e.path === p)!;

beforeAll(async () => {
  manifest = await loadManifest();
  source = await mkdtemp(path.join(os.tmpdir(), 'avatar-origin-'));
  for (const e of manifest.files) {
    await mkdir(path.dirname(path.join(source, e.path)), { recursive: true });
    await copyFile(path.join(mediaDir, e.path), path.join(source, e.path));
  }
});
afterAll(async () => {
  await rm(source, { recursive: true, force: true });
});

beforeEach(async () => {
  origin = await startOrigin(source, manifest);
  dest = await mkdtemp(path.join(os.tmpdir(), 'avatar-fetched-'));
  log = [];
});
afterEach(async () => {
  await origin.close();
  expect(await isPortFree(origin.port)).toBe(true);
  await rm(dest, { recursive: true, force: true });
});

describe('fetchTestData from a local origin', () => {
  it('downloads and verifies every file, re-derives a clip with a warning on record, and skips what is there', async () => {
    // All but the 20 s clip (its re-encode takes longest; the 8 s one goes through the same path).
    const only = manifest.files.map((e) => e.path).filter((p) => p !== 'driving/woman_tongue_crossed_eyes_grimace.mp4');
    const first = await fetchTestData({
      manifest,
      media: dest,
      baseUrl: origin.baseUrl,
      only,
      log: (l) => log.push(l),
    });
    expect(first.downloaded).toHaveLength(only.length - 1);
    expect(first.present).toEqual([]);
    expect(first.rederived.map((r) => r.path)).toEqual(['driving/woman_speech_head_motion.mp4']);
    const speech = entry('driving/woman_speech_head_motion.mp4');
    expect(first.rederived[0]?.referenceSha256).toBe(speech.sha256);
    expect(first.rederived[0]?.ffmpeg).toMatch(/^ffmpeg version/);
    expect(
      log.some((l) => /woman_speech_head_motion\.mp4: WARNING: re-derived copy, not the reference bytes/.test(l)),
    ).toBe(true);

    // What landed is exactly the listed files (no temp files left) plus the report, and it checks out.
    expect((await allFiles(dest)).sort()).toEqual([...only, REPORT_NAME].sort());
    const wanted = { ...manifest, files: manifest.files.filter((e) => only.includes(e.path)) };
    const check = await checkMedia(dest, wanted, { hash: true });
    expect(check.problems).toEqual([]);
    expect(check.files.filter((f) => f.status === 'rederived').map((f) => f.path)).toEqual([speech.path]);
    expect((await readFetchReport(dest))?.rederived).toEqual(first.rederived);
    // The byte-identical files are the reference bytes.
    for (const p of only.filter((x) => x !== speech.path)) {
      expect(sha256(await readFile(path.join(dest, p))), p).toBe(entry(p).sha256);
    }

    origin.hits.clear();
    log = [];
    const second = await fetchTestData({
      manifest,
      media: dest,
      baseUrl: origin.baseUrl,
      only,
      log: (l) => log.push(l),
    });
    expect(origin.hits.size).toBe(0);
    expect(second.downloaded).toEqual([]);
    expect(second.present).toHaveLength(only.length);
    expect(second.rederived).toEqual(first.rederived);
    expect(log.filter((l) => l.includes('(re-derived copy)'))).toHaveLength(1);
  });

  it('rejects a corrupted or oversized download with the file, the URL and both hashes, and keeps nothing of it', async () => {
    const boy = entry('portraits/cartoon_3d_boy.jpg');
    const anime = entry('portraits/anime_spiky_blond_hair.png');
    const good = entry('portraits/real_older_man_glasses.jpg');
    const flipped = await readFile(path.join(source, boy.path));
    flipped[1000] = flipped[1000]! ^ 0xff;
    origin.override.set(boy.path, flipped);
    origin.override.set(anime.path, Buffer.concat([await readFile(path.join(source, anime.path)), Buffer.alloc(10)]));

    const run = fetchTestData({
      manifest,
      media: dest,
      baseUrl: origin.baseUrl,
      only: [boy.path, anime.path, good.path],
      log: (l) => log.push(l),
    });
    const err = await run.then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(FetchError);
    const msg = (err as FetchError).message;
    expect(msg).toContain('2 of 3 files could not be fetched');
    expect(msg).toContain(`${boy.path}: the download does not match test-data/manifest.json; nothing was kept.`);
    expect(msg).toContain(`from:   ${originUrl(boy, origin.baseUrl)}`);
    expect(msg).toContain(`expected ${boy.sha256}`);
    expect(msg).toContain(`got      ${sha256(flipped)}`);
    expect(msg).toContain(
      `${anime.path}: the download from ${originUrl(anime, origin.baseUrl)} is larger than the manifest says`,
    );
    expect(log.filter((l) => l.endsWith('FAILED (see below)'))).toHaveLength(2);
    // The good file is in; nothing of the two bad ones (no temp files either).
    expect(await allFiles(dest)).toEqual([good.path]);
  });

  it('an HTTP error names the file, the status and the URL', async () => {
    const e = entry('portraits/real_man_obama.jpg');
    origin.override.set(e.path, 404);
    await expect(fetchTestData({ manifest, media: dest, baseUrl: origin.baseUrl, only: [e.path] })).rejects.toThrow(
      `${e.path}: HTTP 404 Not Found from ${originUrl(e, origin.baseUrl)}`,
    );
    expect(await allFiles(dest)).toEqual([]);
  });

  it('a derived file whose origin is not the expected clip is refused after ffmpeg, and nothing is kept', async () => {
    const speech = entry('driving/woman_speech_head_motion.mp4');
    // Another clip (480x480) instead of the 512x512, 200-frame origin.
    origin.override.set(speech.path, await readFile(path.join(source, 'driving/man_mouth_wide_open.mp4')));
    await expect(
      fetchTestData({ manifest, media: dest, baseUrl: origin.baseUrl, only: [speech.path] }),
    ).rejects.toThrow(
      /woman_speech_head_motion\.mp4: made from .* with ffmpeg, but it is 480x480 with 216 frames, expected 512x512 with 200: the origin is not the expected clip; nothing was kept/,
    );
    expect(await allFiles(dest)).toEqual([]);
  });

  it('without a network: one clear error at once, nothing kept', async () => {
    const closed = origin.baseUrl;
    await origin.close();
    const err = await fetchTestData({ manifest, media: dest, baseUrl: closed, log: (l) => log.push(l) }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(FetchError);
    const msg = (err as Error).message;
    expect(msg).toContain(`cannot reach ${new URL(closed).host}: `);
    expect(msg).toContain('ECONNREFUSED');
    expect(msg).toContain(`while fetching ${originUrl(manifest.files[0]!, closed)}`);
    expect(msg).toContain('Are you offline');
    // It stopped at the first file instead of trying all 26.
    expect(log).toEqual([]);
    expect(await allFiles(dest)).toEqual([]);
  });
});
