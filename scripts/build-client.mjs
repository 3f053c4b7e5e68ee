// Bundles the client pages (client/studio.ts, client/viewer.ts) and the public avatar-stream module
// (client/lib/avatarStream.ts → client/dist/avatar-stream.js) into client/dist/ with esbuild, with source maps; and the
// face tracker (client/lib/tracker/faceTracker.ts → client/dist/face-tracker.js, its Web Worker → client/dist/face-tracker-worker.js,
// and onnxruntime-web's runtime files copied to client/dist/ort/, which the worker loads at run time); the
// browser extension's scripts (client/extension/src/*.ts → client/extension/dist/, classic scripts: content scripts and
// the service worker cannot share ES chunks) so that client/extension/ loads unpacked.
// `npm run build:client`; `npm start` and `npm test` run it first. Pass --watch to rebuild on change.
import * as esbuild from 'esbuild';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, rm, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const options = {
  entryPoints: {
    studio: path.join(root, 'client', 'studio.ts'),
    viewer: path.join(root, 'client', 'viewer.ts'),
    'avatar-stream': path.join(root, 'client', 'lib', 'avatarStream.ts'),
    'face-tracker': path.join(root, 'client', 'lib', 'tracker', 'faceTracker.ts'),
  },
  outdir: path.join(root, 'client', 'dist'),
  bundle: true,
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  format: 'esm',
  platform: 'browser',
  target: ['chrome100', 'firefox100', 'safari15'],
  sourcemap: true,
  minify: true,
  legalComments: 'linked',
  logLevel: 'warning',
};

// The tracker's worker: one self-contained module (a module worker; onnxruntime-web is not bundled but imported at run
// time from dist/ort/, where its own .mjs finds its .wasm and its thread workers next to it).
const workerOptions = {
  entryPoints: { 'face-tracker-worker': path.join(root, 'client', 'lib', 'tracker', 'worker.ts') },
  outdir: options.outdir,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['chrome100', 'firefox114', 'safari15'],
  sourcemap: true,
  minify: true,
  legalComments: 'linked',
  logLevel: 'warning',
};

/** onnxruntime-web's files the worker loads: WASM (SIMD, threads) and WebGPU (JSPI-free asyncify build). */
const ORT_FILES = [
  'ort.wasm.min.mjs',
  'ort-wasm-simd-threaded.mjs',
  'ort-wasm-simd-threaded.wasm',
  'ort.webgpu.min.mjs',
  'ort-wasm-simd-threaded.asyncify.mjs',
  'ort-wasm-simd-threaded.asyncify.wasm',
];
async function copyOrt() {
  const require = createRequire(import.meta.url);
  const from = path.dirname(require.resolve('onnxruntime-web/ort-wasm-simd-threaded.wasm'));
  const to = path.join(options.outdir, 'ort');
  await mkdir(to, { recursive: true });
  for (const f of ORT_FILES) {
    const [a, b] = await Promise.all([stat(path.join(from, f)), stat(path.join(to, f)).catch(() => null)]);
    if (!b || b.size !== a.size || b.mtimeMs < a.mtimeMs) await copyFile(path.join(from, f), path.join(to, f));
  }
}

const extensionDir = path.join(root, 'client', 'extension');
const extensionOptions = {
  entryPoints: ['inject', 'bridge', 'background', 'popup'].map((n) => path.join(extensionDir, 'src', `${n}.ts`)),
  outdir: path.join(extensionDir, 'dist'),
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: ['chrome116'],
  sourcemap: true,
  minify: false,
  legalComments: 'inline',
  logLevel: 'warning',
};

if (process.argv.includes('--watch')) {
  await copyOrt();
  const ctx = await esbuild.context(options);
  const wk = await esbuild.context(workerOptions);
  const ext = await esbuild.context(extensionOptions);
  await Promise.all([ctx.watch(), wk.watch(), ext.watch()]);
} else {
  const t0 = Date.now();
  const [result, wk, ext] = await Promise.all([
    esbuild.build({ ...options, metafile: true }),
    esbuild.build({ ...workerOptions, metafile: true }),
    esbuild.build({ ...extensionOptions, metafile: true }),
    copyOrt(),
  ]);
  // Chunk names carry content hashes: drop the ones this build did not write, so dist/ does not grow forever.
  const written = new Set(Object.keys(result.metafile.outputs).map((f) => path.resolve(root, f)));
  const chunks = path.join(options.outdir, 'chunks');
  for (const f of existsSync(chunks) ? await readdir(chunks) : []) {
    const full = path.join(chunks, f);
    if (!written.has(full) && !written.has(full.replace(/\.map$/, ''))) await rm(full, { force: true });
  }
  const bytes = Object.entries({ ...result.metafile.outputs, ...wk.metafile.outputs, ...ext.metafile.outputs })
    .filter(([f]) => f.endsWith('.js'))
    .map(([f, o]) => `${path.basename(f)} ${(o.bytes / 1024).toFixed(0)} KiB`);
  process.stdout.write(`client built in ${Date.now() - t0} ms: ${bytes.join(', ')}\n`);
}
