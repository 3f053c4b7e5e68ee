/**
 * What a run without the test data looks like, for real: vitest as a subprocess with AVATAR_TEST_DATA pointing at an
 * empty folder stops before any test file with one message and exit code 1; with the media but without the
 * (not downloadable) reference folder, the parity tests skip with the reason printed and the rest runs.
 */
import { spawn } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { checkMedia, loadManifest, mediaDir, missingDataMessage, repoRoot } from '../../scripts/testData.js';

interface Result {
  code: number | null;
  output: string;
}

/** `vitest run <files>` in the repository with AVATAR_TEST_DATA=`dataDir` (the parent run's VITEST_* vars removed). */
function vitest(dataDir: string, files: string[]): Promise<Result> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('VITEST')));
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [path.join(repoRoot, 'node_modules', 'vitest', 'vitest.mjs'), 'run', ...files], {
      cwd: repoRoot,
      env: { ...env, AVATAR_TEST_DATA: dataDir, NO_COLOR: '1', FORCE_COLOR: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, output }));
  });
}

let tmp: string;
beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'avatar-nodata-'));
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('without the test media', () => {
  it('vitest stops before any test file with one message naming the folder, the setting and the fix', async () => {
    const r = await vitest(tmp, ['tests/vision/oneEuro.test.ts']);
    expect(r.code).toBe(1);
    expect(r.output).toContain('Test data not in place: the folder does not exist (26 files expected).');
    expect(r.output).toContain(`looked in: ${path.join(tmp, 'media')}`);
    expect(r.output).toContain(`setting:   AVATAR_TEST_DATA=${tmp}`);
    expect(r.output).toContain('Run `npm run fetch-test-data`');
    // Nothing ran, and no stack.
    expect(r.output).not.toContain('oneEuro');
    expect(r.output).not.toMatch(/Test Files|Unhandled|^\s+at |❯/m);
  });

  it('the message lists what is missing or wrong when only some files are there', async () => {
    const manifest = await loadManifest();
    const [first, second] = manifest.files;
    await mkdir(path.join(tmp, 'portraits'), { recursive: true });
    await copyFile(path.join(mediaDir, first!.path), path.join(tmp, first!.path));
    await copyFile(path.join(mediaDir, 'portraits/real_asian_young_woman.jpg'), path.join(tmp, second!.path));
    const msg = missingDataMessage(await checkMedia(tmp, manifest, { hash: false }), { AVATAR_TEST_DATA: 'x' });
    expect(msg.split('\n')).toEqual([
      'Test data not in place: 25 of 26 files missing or wrong.',
      `  looked in: ${tmp}`,
      '  setting:   AVATAR_TEST_DATA=x',
      `  wrong size: ${second!.path} (90024 bytes, expected ${second!.size})`,
      ...manifest.files.slice(2, 9).map((f) => `  missing: ${f.path}`),
      '  ... and 17 more',
      'Run `npm run fetch-test-data` to download it (about 21 MB from GitHub; see test-data/README.md),',
      'or set AVATAR_TEST_DATA to a folder that holds media/ (a relative path resolves against the repository root).',
    ]);
  });
});

describe('with the media but without the reference folder', () => {
  it('the parity tests skip with the reason printed, the others run', async () => {
    await symlink(mediaDir, path.join(tmp, 'media'));
    const r = await vitest(tmp, ['tests/vision/features.test.ts']);
    expect(r.output).toContain(
      `reference data not found at ${path.join(tmp, 'reference')}: the openness tests on dlib reference landmarks ` +
        '(features.test.ts) skipped (it is not publicly downloadable; see test-data/README.md)',
    );
    expect(r.output).toMatch(/Tests\s+\d+ passed \| 2 skipped/);
    expect(r.code).toBe(0);
  });
});
