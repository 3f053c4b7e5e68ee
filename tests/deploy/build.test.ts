/**
 * The compiled build, as the image runs it: `tsc -p tsconfig.build.json` (npm run build's server half) writes
 * dist/server, and `node dist/server/main.js` starts the server (port 0), answers /healthz and /readyz, and exits 0 on
 * SIGTERM; the compiled CLI prints the version.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/media.js';
import { waitFor } from '../helpers/wait.js';

const tsc = path.join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc');

describe('the compiled build (dist/)', () => {
  let dataDir: string;
  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'avatar-dist-'));
    const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: repoRoot, encoding: 'utf8' });
    expect(r.status, r.stdout + r.stderr).toBe(0);
  });
  afterAll(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  it('node dist/server/main.js serves /healthz and /readyz, and exits 0 on SIGTERM', async () => {
    const proc: ChildProcess = spawn(process.execPath, [path.join(repoRoot, 'dist', 'server', 'main.js')], {
      cwd: os.tmpdir(), // paths come from the build's own location, not the working directory
      env: { ...process.env, PORT: '0', AVATAR_DATA_DIR: dataDir, AVATAR_ENGINE: 'portrait', FANOUT: 'direct' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const exit = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    try {
      const url = await waitFor(
        () => {
          if (proc.exitCode !== null) throw new Error(`exited early:\n${out}`);
          return /"msg":"server ready".*?"url":"(http:\/\/[^"]+)"/.exec(out)?.[1];
        },
        60_000,
        'server ready',
      );
      const health = await fetch(`${url}/healthz`);
      expect(health.status).toBe(200);
      expect(((await health.json()) as { status: string }).status).toBe('ok');
      const ready = await fetch(`${url}/readyz`);
      expect(ready.status).toBe(200);
      expect(await ready.json()).toEqual({ ready: true });
      // The studio page comes from the checkout's client/, found from dist/ as from the sources.
      expect((await fetch(`${url}/view`)).status).toBe(200);
      proc.kill('SIGTERM');
      expect(await exit, out).toBe(0);
    } finally {
      if (proc.exitCode === null) proc.kill('SIGKILL');
    }
  });

  it('the compiled CLI prints the package version', async () => {
    const pkg = JSON.parse(await readFile(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string };
    const r = spawnSync(process.execPath, [path.join(repoRoot, 'dist', 'server', 'cli', 'index.js'), '--version'], {
      encoding: 'utf8',
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe(`${pkg.version}\n`);
  });
});
