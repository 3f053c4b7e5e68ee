// Bundles the client pages (client/studio.ts, client/viewer.ts) and the public avatar-stream module
// (client/lib/avatarStream.ts → client/dist/avatar-stream.js) into client/dist/ with esbuild, with source maps; and the
// browser extension's scripts (client/extension/src/*.ts → client/extension/dist/, classic scripts: content scripts and
// the service worker cannot share ES chunks) so that client/extension/ loads unpacked.
// `npm run build:client`; `npm start` and `npm test` run it first. Pass --watch to rebuild on change.
import * as esbuild from 'esbuild';
import { existsSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const options = {
  entryPoints: {
    studio: path.join(root, 'client', 'studio.ts'),
    viewer: path.join(root, 'client', 'viewer.ts'),
    'avatar-stream': path.join(root, 'client', 'lib', 'avatarStream.ts'),
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
  const ctx = await esbuild.context(options);
  const ext = await esbuild.context(extensionOptions);
  await Promise.all([ctx.watch(), ext.watch()]);
} else {
  const t0 = Date.now();
  const [result, ext] = await Promise.all([
    esbuild.build({ ...options, metafile: true }),
    esbuild.build({ ...extensionOptions, metafile: true }),
  ]);
  // Chunk names carry content hashes: drop the ones this build did not write, so dist/ does not grow forever.
  const written = new Set(Object.keys(result.metafile.outputs).map((f) => path.resolve(root, f)));
  const chunks = path.join(options.outdir, 'chunks');
  for (const f of existsSync(chunks) ? await readdir(chunks) : []) {
    const full = path.join(chunks, f);
    if (!written.has(full) && !written.has(full.replace(/\.map$/, ''))) await rm(full, { force: true });
  }
  const bytes = Object.entries({ ...result.metafile.outputs, ...ext.metafile.outputs })
    .filter(([f]) => f.endsWith('.js'))
    .map(([f, o]) => `${path.basename(f)} ${(o.bytes / 1024).toFixed(0)} KiB`);
  process.stdout.write(`client built in ${Date.now() - t0} ms: ${bytes.join(', ')}\n`);
}
