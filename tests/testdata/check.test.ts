/**
 * `npm run fetch-test-data -- --check` as a real subprocess: it verifies a data folder against the manifest without
 * the network and exits 1 naming what is missing or wrong; and the command's error when the origin cannot be reached.
 */
import { spawn } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadManifest, mediaDir, repoRoot, testDataDir } from '../../scripts/testData.js';
import { isPortFree } from '../helpers/net.js';

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs scripts/fetch-test-data.ts with AVATAR_TEST_DATA set to `dataDir`. */
function fetchScript(dataDir: string, args: string[]): Promise<Result> {
  return new Promise((resolve, reject) => {
    const p = spawn(
      process.execPath,
      ['--import', 'tsx', path.join(repoRoot, 'scripts', 'fetch-test-data.ts'), ...args],
      {
        cwd: repoRoot,
        env: { ...process.env, AVATAR_TEST_DATA: dataDir },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A loopback port that nothing listens on any more. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
  expect(await isPortFree(port)).toBe(true);
  return port;
}

let tmp: string;
beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'avatar-check-'));
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('fetch-test-data --check', () => {
  it('passes on the data in use', async () => {
    const r = await fetchScript(testDataDir, ['--check']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain(`${mediaDir}: 26 of 26 files in place`);
    expect(r.code).toBe(0);
  });

  it('names a missing and a wrong file and exits 1, without the network', async () => {
    const manifest = await loadManifest();
    const media = path.join(tmp, 'media');
    for (const e of manifest.files) {
      await mkdir(path.dirname(path.join(media, e.path)), { recursive: true });
      await copyFile(path.join(mediaDir, e.path), path.join(media, e.path));
    }
    await rm(path.join(media, 'driving/child_talking_gaze.mp4'));
    const wrong = path.join(media, 'portraits/cartoon_3d_boy.jpg');
    const bytes = await readFile(wrong);
    bytes[500] = bytes[500]! ^ 1;
    await rm(wrong);
    await writeFile(wrong, bytes);

    const r = await fetchScript(tmp, ['--check']);
    expect(r.code).toBe(1);
    const lines = r.stdout.split('\n');
    expect(lines).toContain('missing: driving/child_talking_gaze.mp4');
    const boy = manifest.files.find((f) => f.path === 'portraits/cartoon_3d_boy.jpg')!;
    expect(lines.find((l) => l.startsWith('wrong content: portraits/cartoon_3d_boy.jpg'))).toMatch(
      new RegExp(`^wrong content: portraits/cartoon_3d_boy\\.jpg \\(sha256 [0-9a-f]{64}, expected ${boy.sha256}\\)$`),
    );
    expect(r.stdout).toContain(`${media}: 24 of 26 files in place; 2 missing or wrong: run npm run fetch-test-data`);
  });
});

describe('fetch-test-data without a reachable origin', () => {
  it('exits 1 with one clear message', async () => {
    // A port that was just free (a server on port 0, closed): the connection is refused at once.
    const port = await closedPort();
    const r = await fetchScript(tmp, ['--base-url', `http://127.0.0.1:${port}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`cannot reach 127.0.0.1:${port}: `);
    expect(r.stderr).toContain('ECONNREFUSED');
    expect(r.stderr).toContain('Are you offline');
    expect(r.stderr).not.toMatch(/^\s+at /m);
  });
});
