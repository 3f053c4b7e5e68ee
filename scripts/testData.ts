/**
 * Where the test data lives and whether it is in place: the one module that tests, benchmarks, the vitest global
 * setup and `npm run fetch-test-data` share. No network here (the download is in fetch-test-data.ts).
 *
 * The data folder is `$AVATAR_TEST_DATA` (a relative value resolves against the repository root), by default
 * `../shared` beside the repository. It holds:
 * - `media/`: portraits and driving clips, listed with size and sha256 in test-data/manifest.json and downloadable
 *   from their public origins;
 * - `reference/`: dlib and OpenCV reference outputs for the vision parity tests. Not publicly downloadable (made
 *   with dlib's own C++ at the workplace): the tests that need it skip, with the reason printed, when it is missing.
 */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root. */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** The environment variable that names the test data folder. */
export const TEST_DATA_ENV = 'AVATAR_TEST_DATA';
/** The manifest of the media files (committed; the media are not). */
export const manifestFile = path.join(repoRoot, 'test-data', 'manifest.json');
/** Written by the fetch script into the media folder: which files are re-derived copies. */
export const REPORT_NAME = 'fetch-report.json';
/** What the media folder may hold besides the manifest's files. */
export const MEDIA_EXTRAS: readonly string[] = ['MANIFEST.md', REPORT_NAME];

/**
 * The test data folder for an environment: `AVATAR_TEST_DATA` resolved against `root` when set and not blank,
 * else `../shared` beside `root`.
 */
export function resolveTestDataDir(
  env: Readonly<Record<string, string | undefined>> = process.env,
  root = repoRoot,
): string {
  const value = env[TEST_DATA_ENV]?.trim();
  return value ? path.resolve(root, value) : path.resolve(root, '..', 'shared');
}

/** How the folder was chosen, for messages: the setting's value, or that it is unset. */
export function describeSetting(env: Readonly<Record<string, string | undefined>> = process.env): string {
  const value = env[TEST_DATA_ENV]?.trim();
  return value ? `${TEST_DATA_ENV}=${value}` : `${TEST_DATA_ENV} is not set (default: ../shared beside the repository)`;
}

// Resolved once per process: a test file's process gets its environment from vitest when it is started and keeps it.
/** The test data folder of this process. */
export const testDataDir = resolveTestDataDir();
/** Portraits and driving clips (`portraits/`, `driving/`). */
export const mediaDir = path.join(testDataDir, 'media');
/** dlib and OpenCV reference outputs for the vision parity tests (not publicly downloadable). */
export const referenceDir = path.join(testDataDir, 'reference');

/** A portrait of the test media, e.g. `portraitFile('real_woman_dark_hair.png')`. */
export const portraitFile = (name: string): string => path.join(mediaDir, 'portraits', name);
/** A driving clip of the test media, e.g. `drivingClip('man_mouth_wide_open.mp4')`. */
export const drivingClip = (name: string): string => path.join(mediaDir, 'driving', name);

/** Whether the reference folder is there (its FORMAT.md is the marker). */
export function referenceAvailable(dir = referenceDir): boolean {
  return existsSync(path.join(dir, 'FORMAT.md'));
}

/** The line a test file prints when it skips its reference tests. */
export function referenceSkipMessage(what: string, dir = referenceDir): string {
  return (
    `reference data not found at ${dir}: ${what} skipped ` +
    '(it is not publicly downloadable; see test-data/README.md)'
  );
}

/** How a file of ours was made from its origin; without `ffmpeg` the bytes are the origin's. */
export interface DeriveStep {
  /** In words. */
  how: string;
  /** ffmpeg arguments, space-separated, with `{origin}` and `{out}` for the input and output files. */
  ffmpeg?: string;
  /** What the derived file must have (ffprobe), whatever its bytes. */
  expect?: { width: number; height: number; frames: number };
}

/** One media file of the manifest. */
export interface ManifestEntry {
  /** Relative to the media folder, with forward slashes. */
  path: string;
  size: number;
  sha256: string;
  /** GitHub owner/name of the origin. */
  repository: string;
  /** The snapshot commit (abbreviated). */
  commit: string;
  /** The file's path in the origin repository. */
  originPath: string;
  /** `https://github.com/<repository>/raw/<commit>/<originPath>`. */
  url: string;
  /** The license the origin repository states (see the manifest's `licenses`). */
  license: string;
  derive?: DeriveStep;
}

export interface Manifest {
  about: string;
  pinning: string;
  licenses: string;
  derived: string;
  notListed: string;
  files: ManifestEntry[];
}

function isEntry(v: unknown): v is ManifestEntry {
  if (typeof v !== 'object' || v === null) return false;
  const e = v as Record<string, unknown>;
  const strings = ['path', 'sha256', 'repository', 'commit', 'originPath', 'url', 'license'] as const;
  return (
    strings.every((k) => typeof e[k] === 'string') &&
    typeof e.size === 'number' &&
    /^[0-9a-f]{64}$/.test(e.sha256 as string) &&
    (e.derive === undefined || (typeof e.derive === 'object' && e.derive !== null))
  );
}

/** Reads and checks the manifest (a malformed one names the file and the first bad entry). */
export async function loadManifest(file = manifestFile): Promise<Manifest> {
  const data = JSON.parse(await readFile(file, 'utf8')) as Partial<Manifest>;
  if (!Array.isArray(data.files)) throw new Error(`${file}: no "files" list`);
  const bad = data.files.findIndex((e) => !isEntry(e));
  if (bad >= 0) throw new Error(`${file}: files[${bad}] lacks a field or has a malformed one`);
  return data as Manifest;
}

/** One re-derived file recorded by the fetch script. */
export interface RederivedEntry {
  path: string;
  size: number;
  sha256: string;
  /** The manifest's (reference) sha256, which this copy does not have. */
  referenceSha256: string;
  /** `ffmpeg -version`'s first line. */
  ffmpeg: string;
  /** When it was made (ISO 8601). */
  made: string;
}

/** `fetch-report.json` in the media folder. */
export interface FetchReport {
  note: string;
  /** When the report was written (ISO 8601). */
  written: string;
  rederived: RederivedEntry[];
}

/** The media folder's fetch report, or null when there is none (or it is unreadable). */
export async function readFetchReport(media = mediaDir): Promise<FetchReport | null> {
  try {
    const data = JSON.parse(await readFile(path.join(media, REPORT_NAME), 'utf8')) as Partial<FetchReport>;
    return Array.isArray(data.rederived) ? (data as FetchReport) : null;
  } catch {
    // No report (the usual case) or a damaged one: either way no file counts as re-derived.
    return null;
  }
}

/** The sha256 of a file, hex. */
export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** The state of one manifest file in a media folder. */
export type FileState =
  | { path: string; status: 'ok' }
  /** A re-derived copy recorded in the fetch report (usable, but not the reference bytes). */
  | { path: string; status: 'rederived'; sha256: string }
  | { path: string; status: 'missing' }
  | { path: string; status: 'wrong-size'; expected: number; got: number }
  | { path: string; status: 'wrong-hash'; expected: string; got: string };

export interface CheckResult {
  /** The media folder checked. */
  media: string;
  /** Whether the folder exists at all. */
  exists: boolean;
  files: FileState[];
  /** Missing or wrong files (empty when the folder is usable). */
  problems: FileState[];
}

/**
 * Checks a media folder against the manifest: existence and size of every file, and its sha256 when `hash` (about
 * 50 ms for the 21 MB). A derived file recorded in `fetch-report.json` as re-derived passes with its recorded size
 * and hash; a byte-identical file must match the manifest.
 */
export async function checkMedia(media: string, manifest: Manifest, opts: { hash: boolean }): Promise<CheckResult> {
  const report = await readFetchReport(media);
  const rederived = new Map((report?.rederived ?? []).map((r) => [r.path, r]));
  const files = await Promise.all(
    manifest.files.map(async (entry): Promise<FileState> => {
      const file = path.join(media, entry.path);
      const size = await stat(file).then(
        (s) => (s.isFile() ? s.size : -1),
        () => -1,
      );
      if (size < 0) return { path: entry.path, status: 'missing' };
      const redo = entry.derive?.ffmpeg ? rederived.get(entry.path) : undefined;
      const okSize = size === entry.size || size === redo?.size;
      if (!okSize) return { path: entry.path, status: 'wrong-size', expected: entry.size, got: size };
      if (!opts.hash) return size === entry.size ? { path: entry.path, status: 'ok' } : rederivedState(entry, redo);
      const got = await sha256File(file);
      if (got === entry.sha256) return { path: entry.path, status: 'ok' };
      if (redo && got === redo.sha256) return rederivedState(entry, redo);
      return { path: entry.path, status: 'wrong-hash', expected: entry.sha256, got };
    }),
  );
  return {
    media,
    exists: existsSync(media),
    files,
    problems: files.filter((f) => f.status !== 'ok' && f.status !== 'rederived'),
  };
}

function rederivedState(entry: ManifestEntry, redo: RederivedEntry | undefined): FileState {
  return redo ? { path: entry.path, status: 'rederived', sha256: redo.sha256 } : { path: entry.path, status: 'ok' };
}

/** One line per problem, e.g. `missing: portraits/x.jpg`. */
export function describeState(s: FileState): string {
  switch (s.status) {
    case 'ok':
      return `ok: ${s.path}`;
    case 'rederived':
      return `re-derived copy (not the reference bytes, see ${REPORT_NAME}): ${s.path}`;
    case 'missing':
      return `missing: ${s.path}`;
    case 'wrong-size':
      return `wrong size: ${s.path} (${s.got} bytes, expected ${s.expected})`;
    case 'wrong-hash':
      return `wrong content: ${s.path} (sha256 ${s.got}, expected ${s.expected})`;
  }
}

/**
 * The message that stops a test run when the media are not in place: what is missing or wrong, where it looked,
 * the setting, and the command that fixes it.
 */
export function missingDataMessage(
  result: CheckResult,
  env: Readonly<Record<string, string | undefined>> = process.env,
  shown = 8,
): string {
  const total = result.files.length;
  const missing = result.problems.filter((p) => p.status === 'missing').length;
  const what = !result.exists
    ? `the folder does not exist (${total} files expected)`
    : missing === total
      ? `none of the ${total} files is there`
      : `${result.problems.length} of ${total} files missing or wrong`;
  const lines = result.problems.slice(0, shown).map((p) => `  ${describeState(p)}`);
  if (result.problems.length > shown) lines.push(`  ... and ${result.problems.length - shown} more`);
  return [
    `Test data not in place: ${what}.`,
    `  looked in: ${result.media}`,
    `  setting:   ${describeSetting(env)}`,
    ...(result.exists && missing < total ? lines : []),
    'Run `npm run fetch-test-data` to download it (about 21 MB from GitHub; see test-data/README.md),',
    `or set ${TEST_DATA_ENV} to a folder that holds media/ (a relative path resolves against the repository root).`,
  ].join('\n');
}

/** The environment variable mediasoup itself reads for its worker binary. */
export const WORKER_BIN_ENV = 'MEDIASOUP_WORKER_BIN';

/**
 * The mediasoup worker for tests and benchmarks: `MEDIASOUP_WORKER_BIN` when set, else `bin/mediasoup-worker` in the
 * test data folder (the workplace's ../shared/bin holds mediasoup 3.18.1's worker built from its sources) when it is
 * there, else null (the SFU tests that need a worker skip, saying why). Always an absolute path: mediasoup spawns it as
 * given.
 */
export function resolveMediasoupWorkerBin(
  env: Readonly<Record<string, string | undefined>> = process.env,
  root = repoRoot,
): string | null {
  const value = env[WORKER_BIN_ENV]?.trim();
  if (value) return path.resolve(root, value);
  const beside = path.join(resolveTestDataDir(env, root), 'bin', 'mediasoup-worker');
  return existsSync(beside) ? beside : null;
}
