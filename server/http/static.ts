/**
 * Static files from a folder (the client pages and their built bundles). Paths are resolved inside the root and
 * anything that would leave it (`..`, absolute paths, NUL bytes, dot-files) is a 404; only regular files are served.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { AppError } from '../errors.js';
import type { HttpExchange } from './exchange.js';

const contentTypes: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.webp': 'image/webp',
  '.ico': 'image/x-icon',
  '.wasm': 'application/wasm',
  '.onnx': 'application/octet-stream',
  '.txt': 'text/plain; charset=utf-8',
  '.woff2': 'font/woff2',
};

/** Content type for a file name, by extension; application/octet-stream when unknown. */
export function contentTypeFor(file: string): string {
  return contentTypes[path.extname(file).toLowerCase()] ?? 'application/octet-stream';
}

/**
 * Resolves `relative` (already percent-decoded, '/'-separated) inside `root`; null when it would escape the root or
 * names a hidden file. Pure.
 */
export function resolveInside(root: string, relative: string): string | null {
  if (relative.includes('\0') || relative.includes('\\')) return null;
  const segments = relative.split('/').filter((s) => s.length > 0);
  if (segments.length === 0) return null;
  if (segments.some((s) => s === '..' || s === '.' || s.startsWith('.'))) return null;
  const full = path.resolve(root, ...segments);
  const rel = path.relative(root, full);
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) return null;
  return full;
}

/**
 * Serves one file inside `root` (404 NOT_FOUND when missing, outside the root, or not a regular file), with `headers`
 * added.
 */
export async function serveFile(
  ex: HttpExchange,
  root: string,
  relative: string,
  cacheControl = 'no-cache',
  headers: Readonly<Record<string, string>> = {},
): Promise<void> {
  const full = resolveInside(root, relative);
  if (!full) throw new AppError('NOT_FOUND', 'no such file');
  let data: Buffer;
  try {
    // realpath: a symlink inside the root must not lead outside it.
    const real = await fs.realpath(full);
    const realRoot = await fs.realpath(root);
    const rel = path.relative(realRoot, real);
    if (rel.startsWith('..') || path.isAbsolute(rel)) throw new AppError('NOT_FOUND', 'no such file');
    const st = await fs.stat(real);
    if (!st.isFile()) throw new AppError('NOT_FOUND', 'no such file');
    data = await fs.readFile(real);
  } catch (err) {
    if (err instanceof AppError) throw err;
    throw new AppError('NOT_FOUND', 'no such file', { cause: err });
  }
  ex.send(200, { ...headers, 'content-type': contentTypeFor(full), 'cache-control': cacheControl }, data);
}
