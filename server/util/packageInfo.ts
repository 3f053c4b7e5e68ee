import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The project's package.json fields that the server and the CLI use. */
export interface PackageInfo {
  /** The repository (or image) root: the folder that holds package.json, client/ and models/. */
  root: string;
  name: string;
  version: string;
}

const PACKAGE_NAME = 'live-avatar-server';

/**
 * Finds this project's package.json by walking up from `fromUrl` (a module URL). The walk, not a fixed `../..`,
 * because the same module runs from the source tree (server/util/) and from the compiled build (dist/server/util/).
 */
export function findPackage(fromUrl: string): PackageInfo {
  let dir = path.dirname(fileURLToPath(fromUrl));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as {
        name?: unknown;
        version?: unknown;
      };
      if (pkg.name === PACKAGE_NAME && typeof pkg.version === 'string') {
        return { root: dir, name: pkg.name, version: pkg.version };
      }
    } catch {
      // No (readable) package.json here: keep walking up.
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`package.json of ${PACKAGE_NAME} not found above ${fileURLToPath(fromUrl)}`);
    dir = up;
  }
}

let cached: PackageInfo | undefined;

/** This project's package (found once per process). */
export function packageInfo(): PackageInfo {
  cached ??= findPackage(import.meta.url);
  return cached;
}
