/**
 * `npm run fetch-test-data [-- --check] [-- --base-url URL]`
 *
 * Downloads every file of test-data/manifest.json from its origin into `$AVATAR_TEST_DATA/media` (default
 * ../shared/media beside the repository), checking size and sha256 of each; files already there with the right hash
 * are skipped. Derived files (re-encoded clips) are made again from their origin with the local ffmpeg: when the
 * result's hash differs from the reference (other ffmpeg/x264 builds encode differently) the copy is kept with a
 * warning and recorded in `fetch-report.json`. `--check` only verifies the folder (no network) and exits 1 when a
 * file is missing or wrong. `--base-url` fetches from a mirror laid out like github.com (`<owner>/<repo>/raw/...`).
 */
import { createHash } from 'node:crypto';
import { mkdir, open, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { runCapture } from '../server/util/video.js';
import {
  checkMedia,
  describeSetting,
  describeState,
  loadManifest,
  mediaDir,
  readFetchReport,
  REPORT_NAME,
  sha256File,
  type FetchReport,
  type FileState,
  type Manifest,
  type ManifestEntry,
  type RederivedEntry,
} from './testData.js';

/** A download or derivation that failed; the message names the file, the URL and what went wrong. */
export class FetchError extends Error {
  override name = 'FetchError';
}

/** Bytes of one file so far, for a progress display. */
export interface Progress {
  path: string;
  received: number;
  /** From Content-Length; null when the server does not say. */
  total: number | null;
}

export interface FetchOptions {
  manifest: Manifest;
  /** The media folder to fill. */
  media: string;
  /** A mirror laid out like github.com; default: each entry's `url`. */
  baseUrl?: string;
  /** The fetch implementation (default: Node's). */
  fetch?: typeof globalThis.fetch;
  /** Only these manifest paths (default: all). */
  only?: readonly string[];
  ffmpeg?: string;
  ffprobe?: string;
  /** Per request, headers and body together. Default 5 minutes. */
  timeoutMs?: number;
  /** Status lines (one per file, warnings). */
  log?: (line: string) => void;
  onProgress?: (p: Progress) => void;
}

export interface FetchSummary {
  /** Already in place (right hash, or a recorded re-derived copy). */
  present: string[];
  /** Downloaded and verified against the manifest's sha256. */
  downloaded: string[];
  /** Made again from the origin with a different result than the reference bytes (kept, recorded). */
  rederived: RederivedEntry[];
}

/** Where a manifest file is downloaded from: its `url`, or the same path under a mirror. */
export function originUrl(entry: ManifestEntry, baseUrl?: string): string {
  if (baseUrl === undefined) return entry.url;
  return `${baseUrl.replace(/\/+$/, '')}/${entry.repository}/raw/${entry.commit}/${entry.originPath}`;
}

/** Largest origin accepted for a derived file, whose origin size the manifest does not know. */
const MAX_ORIGIN_BYTES = 500 * 1024 * 1024;

/**
 * Downloads (or re-derives) every manifest file that is not in place into `opts.media`. Throws a FetchError after
 * trying every file when some failed (listing them), or at once when the network cannot be reached at all; a failed
 * file leaves nothing behind.
 */
export async function fetchTestData(opts: FetchOptions): Promise<FetchSummary> {
  const log = opts.log ?? (() => undefined);
  const only = opts.only ? new Set(opts.only) : null;
  const entries = opts.manifest.files.filter((e) => !only || only.has(e.path));
  const wanted: Manifest = { ...opts.manifest, files: entries };
  const states = new Map((await checkMedia(opts.media, wanted, { hash: true })).files.map((s) => [s.path, s]));
  const previous = await readFetchReport(opts.media);
  const summary: FetchSummary = { present: [], downloaded: [], rederived: [] };
  const failures: string[] = [];
  let ffmpegVersion: string | null = null;

  let changed = false;
  try {
    for (const [i, entry] of entries.entries()) {
      const tag = `[${String(i + 1).padStart(String(entries.length).length)}/${entries.length}] ${entry.path}`;
      const state = states.get(entry.path);
      if (state?.status === 'ok' || state?.status === 'rederived') {
        summary.present.push(entry.path);
        const kept = previous?.rederived.find((r) => r.path === entry.path);
        if (state.status === 'rederived' && kept) summary.rederived.push(kept);
        log(`${tag}: present${state.status === 'rederived' ? ' (re-derived copy)' : ''}`);
        continue;
      }
      if (state && state.status !== 'missing') log(`${tag}: ${describeState(state)}; fetching it again`);
      try {
        if (entry.derive?.ffmpeg) {
          ffmpegVersion ??= await toolVersion(opts.ffmpeg ?? 'ffmpeg', entry);
          const made = await deriveFile(entry, ffmpegVersion, opts);
          changed = true;
          if (made) {
            summary.rederived.push(made);
            log(
              `${tag}: WARNING: re-derived copy, not the reference bytes (sha256 ${made.sha256}, reference ` +
                `${entry.sha256}; made with ${made.ffmpeg}); kept and recorded in ${REPORT_NAME}`,
            );
          } else {
            summary.downloaded.push(entry.path);
            log(`${tag}: derived, identical to the reference`);
          }
        } else {
          await download(originUrl(entry, opts.baseUrl), path.join(opts.media, entry.path), entry, opts);
          changed = true;
          summary.downloaded.push(entry.path);
          log(`${tag}: ${formatBytes(entry.size)} ok`);
        }
      } catch (err) {
        // No network at all: every other file would fail the same way.
        if (!(err instanceof FetchError) || err.cause instanceof NetworkError) throw err;
        failures.push(err.message);
        log(`${tag}: FAILED (see below)`);
      }
    }
  } finally {
    // Also after a failure: the re-derived copies made so far must be on record, or --check calls them wrong.
    const others = previous?.rederived.filter((r) => !entries.some((e) => e.path === r.path)) ?? [];
    const rederived = [...others, ...summary.rederived];
    // Only when a file changed, and only once there is something to record (or an old record to update).
    if (changed && (rederived.length > 0 || previous)) await writeReport(opts.media, rederived);
  }
  if (failures.length > 0) {
    throw new FetchError(`${failures.length} of ${entries.length} files could not be fetched:\n${failures.join('\n')}`);
  }
  return summary;
}

async function writeReport(media: string, rederived: RederivedEntry[]): Promise<void> {
  const report: FetchReport = {
    note:
      're-derived: derived files that the local ffmpeg made again from their origin with other bytes than the ' +
      'reference copy (test-data/manifest.json). They are usable test data; results on them may differ slightly.',
    written: new Date().toISOString(),
    rederived,
  };
  await writeFile(path.join(media, REPORT_NAME), `${JSON.stringify(report, null, 2)}\n`);
}

/** The cause of a FetchError when the server could not be reached at all (no use trying the other files). */
class NetworkError extends Error {
  override name = 'NetworkError';
}

/**
 * Streams `url` into a temp file beside `dest`, hashing as it goes; renames it into place only when size and sha256
 * match `expect` (null: no check, for derived files' origins). Returns the size and sha256 it got.
 */
async function download(
  url: string,
  dest: string,
  expect: { path: string; size: number; sha256: string } | null,
  opts: FetchOptions,
  label = expect?.path ?? dest,
): Promise<{ size: number; sha256: string }> {
  await mkdir(path.dirname(dest), { recursive: true });
  const tmp = path.join(path.dirname(dest), `.${path.basename(dest)}.${process.pid}.part`);
  const fetchImpl = opts.fetch ?? globalThis.fetch;
  try {
    let res: Response;
    try {
      res = await fetchImpl(url, { redirect: 'follow', signal: AbortSignal.timeout(opts.timeoutMs ?? 300_000) });
    } catch (err) {
      throw new FetchError(unreachable(url, err), { cause: new NetworkError(String(err), { cause: err }) });
    }
    if (!res.ok || !res.body) {
      throw new FetchError(`${label}: HTTP ${res.status} ${res.statusText} from ${url}`);
    }
    const total = Number(res.headers.get('content-length')) || null;
    const limit = expect ? expect.size : MAX_ORIGIN_BYTES;
    const hash = createHash('sha256');
    let received = 0;
    const file = await open(tmp, 'w');
    try {
      const reader = res.body.getReader();
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (err) {
          const why = errText(err);
          throw new FetchError(`${label}: the download from ${url} broke off after ${received} bytes: ${why}`, {
            cause: err,
          });
        }
        if (chunk.done) break;
        received += chunk.value.length;
        if (received > limit) {
          await reader.cancel();
          throw new FetchError(
            `${label}: the download from ${url} is larger than ${expect ? 'the manifest says' : 'any origin'} ` +
              `(${limit} bytes); nothing was kept`,
          );
        }
        hash.update(chunk.value);
        await file.write(chunk.value);
        opts.onProgress?.({ path: label, received, total });
      }
    } finally {
      await file.close();
    }
    const sha256 = hash.digest('hex');
    if (expect && (sha256 !== expect.sha256 || received !== expect.size)) {
      throw new FetchError(
        [
          `${label}: the download does not match test-data/manifest.json; nothing was kept.`,
          `  from:   ${url}`,
          `  sha256: expected ${expect.sha256}`,
          `          got      ${sha256}`,
          `  size:   expected ${expect.size} bytes, got ${received}`,
        ].join('\n'),
      );
    }
    await rename(tmp, dest);
    return { size: received, sha256 };
  } finally {
    await rm(tmp, { force: true });
  }
}

/**
 * Downloads a derived file's origin and runs the manifest's ffmpeg step on it. Returns null when the result is the
 * reference bytes, or the re-derived entry when the bytes differ but the video checks (size, frame count) pass.
 */
async function deriveFile(
  entry: ManifestEntry,
  ffmpegVersion: string,
  opts: FetchOptions,
): Promise<RederivedEntry | null> {
  const step = entry.derive!;
  const dest = path.join(opts.media, entry.path);
  const dir = path.dirname(dest);
  const origin = path.join(dir, `.${path.basename(dest)}.${process.pid}.origin`);
  // ffmpeg picks the container from the extension.
  const out = path.join(dir, `.${path.basename(dest, path.extname(dest))}.${process.pid}.part${path.extname(dest)}`);
  const url = originUrl(entry, opts.baseUrl);
  try {
    await download(url, origin, null, opts, `${entry.path} (origin ${entry.originPath})`);
    const args = step.ffmpeg!.split(/\s+/).map((a) => (a === '{origin}' ? origin : a === '{out}' ? out : a));
    await run(opts.ffmpeg ?? 'ffmpeg', ['-hide_banner', '-v', 'error', '-y', ...args], entry);
    const sha256 = await sha256File(out);
    const { size } = await stat(out);
    if (step.expect) {
      const got = await probe(opts.ffprobe ?? 'ffprobe', out, entry);
      const want = step.expect;
      if (got.width !== want.width || got.height !== want.height || got.frames !== want.frames) {
        throw new FetchError(
          `${entry.path}: made from ${url} with ffmpeg, but it is ${got.width}x${got.height} with ${got.frames} ` +
            `frames, expected ${want.width}x${want.height} with ${want.frames}: the origin is not the expected clip; ` +
            'nothing was kept',
        );
      }
    }
    await rename(out, dest);
    if (sha256 === entry.sha256) return null;
    return {
      path: entry.path,
      size,
      sha256,
      referenceSha256: entry.sha256,
      ffmpeg: ffmpegVersion,
      made: new Date().toISOString(),
    };
  } finally {
    await rm(origin, { force: true });
    await rm(out, { force: true });
  }
}

async function toolVersion(tool: string, entry: ManifestEntry): Promise<string> {
  const outText = await run(tool, ['-version'], entry);
  return outText.split('\n')[0]?.trim() ?? tool;
}

async function probe(
  ffprobe: string,
  file: string,
  entry: ManifestEntry,
): Promise<{ width: number; height: number; frames: number }> {
  const json = await run(
    ffprobe,
    ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'stream=width,height,nb_frames', '-of', 'json', file],
    entry,
  );
  const s = (JSON.parse(json) as { streams?: { width?: number; height?: number; nb_frames?: string }[] }).streams?.[0];
  return { width: s?.width ?? 0, height: s?.height ?? 0, frames: Number(s?.nb_frames ?? 0) };
}

/** Runs a tool and returns its stdout; a missing tool or a failure is a FetchError naming the file it was for. */
async function run(cmd: string, args: string[], entry: ManifestEntry): Promise<string> {
  let r: { code: number; stdout: string; stderr: string };
  try {
    r = await runCapture(cmd, args);
  } catch (err) {
    throw new FetchError(
      `${entry.path}: cannot run ${cmd} (${(err as Error).message}); it is needed to derive this file`,
      {
        cause: err,
      },
    );
  }
  if (r.code !== 0)
    throw new FetchError(`${entry.path}: ${cmd} failed (exit ${r.code}): ${r.stderr.trim().slice(-2000)}`);
  return r.stdout;
}

function errText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause as { code?: string; message?: string } | undefined;
  if (!cause?.code) return err.message;
  return cause.message?.includes(cause.code) ? cause.message : `${cause.code} ${cause.message ?? ''}`.trim();
}

/** The message for a request that got no answer at all. */
function unreachable(url: string, err: unknown): string {
  const host = URL.canParse(url) ? new URL(url).host : url;
  const timedOut = err instanceof Error && err.name === 'TimeoutError';
  return [
    `cannot reach ${host}: ${timedOut ? 'the request timed out' : errText(err)}`,
    `  while fetching ${url}`,
    "Are you offline, or is the network behind a proxy? The test data comes from GitHub (Node's fetch does not use",
    'HTTP(S)_PROXY). Nothing was kept of this file; files already fetched stay in place, so run it again later.',
  ].join('\n');
}

function formatBytes(n: number): string {
  return n >= 1024 * 1024 ? `${(n / 1024 / 1024).toFixed(1)} MB` : `${Math.max(1, Math.round(n / 1024))} kB`;
}

/** `--check`: verifies the folder against the manifest and prints what is missing or wrong. */
export async function checkCommand(media: string, manifest: Manifest, print: (line: string) => void): Promise<number> {
  const result = await checkMedia(media, manifest, { hash: true });
  const notes = result.files.filter((f): f is FileState & { status: 'rederived' } => f.status === 'rederived');
  for (const s of [...result.problems, ...notes]) print(describeState(s));
  const ok = result.files.length - result.problems.length;
  print(
    `${media}: ${ok} of ${result.files.length} files in place` +
      (notes.length ? ` (${notes.length} re-derived)` : '') +
      (result.problems.length ? `; ${result.problems.length} missing or wrong: run npm run fetch-test-data` : ''),
  );
  return result.problems.length ? 1 : 0;
}

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { check: { type: 'boolean' }, 'base-url': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    console.log('npm run fetch-test-data [-- --check] [-- --base-url URL]   (see test-data/README.md)');
    return 0;
  }
  const manifest = await loadManifest();
  console.log(`test data: ${mediaDir}  (${describeSetting()})`);
  if (values.check) return checkCommand(mediaDir, manifest, (l) => console.log(l));

  const tty = process.stdout.isTTY;
  let lastDraw = 0;
  const summary = await fetchTestData({
    manifest,
    media: mediaDir,
    baseUrl: values['base-url'],
    log: (line) => {
      if (tty) process.stdout.write('\r\x1b[K');
      console.log(line);
    },
    onProgress: ({ path: p, received, total }) => {
      const now = Date.now();
      if (!tty || now - lastDraw < 200) return;
      lastDraw = now;
      const pct = total ? ` ${Math.floor((100 * received) / total)}%` : '';
      process.stdout.write(`\r\x1b[K  ${p}${pct} (${formatBytes(received)})`);
    },
  });
  console.log(
    `done: ${summary.downloaded.length} downloaded, ${summary.present.length} already present` +
      (summary.rederived.length
        ? `, ${summary.rederived.length} re-derived copies (not the reference bytes; see ${REPORT_NAME})`
        : ''),
  );
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err instanceof FetchError || err instanceof TypeError ? err.message : err);
      process.exit(1);
    },
  );
}
