/**
 * test-data/manifest.json against the media folder in use ($AVATAR_TEST_DATA/media): the same files, sizes and
 * sha256 (hashed here, independently of checkMedia), so the manifest cannot drift from the data; and the setting's
 * resolution rules.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  loadManifest,
  MEDIA_EXTRAS,
  mediaDir,
  readFetchReport,
  repoRoot,
  resolveTestDataDir,
  type Manifest,
} from '../../scripts/testData.js';

async function listFiles(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(path.join(dir, rel), { withFileTypes: true })) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await listFiles(dir, p)));
    else out.push(p);
  }
  return out;
}

describe('test-data/manifest.json', () => {
  let manifest: Manifest;
  beforeAll(async () => {
    manifest = await loadManifest();
  });

  it('lists exactly the files of the media folder, with their sizes and sha256', async () => {
    const onDisk = (await listFiles(mediaDir)).filter((f) => !MEDIA_EXTRAS.includes(f)).sort();
    expect(manifest.files.map((f) => f.path).sort()).toEqual(onDisk);
    expect(onDisk).toHaveLength(26);
    const rederived = new Map((await readFetchReport(mediaDir))?.rederived.map((r) => [r.path, r]) ?? []);
    for (const entry of manifest.files) {
      const bytes = await readFile(path.join(mediaDir, entry.path));
      const sha256 = createHash('sha256').update(bytes).digest('hex');
      // A re-derived clip (another ffmpeg made it from the origin) has its own bytes, on record in the fetch report.
      const redo = entry.derive?.ffmpeg ? rederived.get(entry.path) : undefined;
      const want = redo ? { size: redo.size, sha256: redo.sha256 } : { size: entry.size, sha256: entry.sha256 };
      expect({ size: bytes.length, sha256 }, entry.path).toEqual(want);
    }
  });

  it('every entry names its origin consistently, and every derived clip says how it was made', () => {
    expect(new Set(manifest.files.map((f) => f.path)).size).toBe(manifest.files.length);
    for (const f of manifest.files) {
      expect(f.url, f.path).toBe(`https://github.com/${f.repository}/raw/${f.commit}/${f.originPath}`);
      expect(f.commit, f.path).toMatch(/^[0-9a-f]{7,40}$/);
      expect(f.path, f.path).toMatch(/^(portraits|driving)\/[a-z0-9_]+\.(jpg|png|mp4)$/);
      expect(f.license.length, f.path).toBeGreaterThan(0);
      if (f.derive?.ffmpeg) {
        expect(f.derive.ffmpeg, f.path).toMatch(/^-i \{origin\} .* \{out\}$/);
        expect(f.derive.expect, f.path).toBeDefined();
      }
    }
    const derived = manifest.files.filter((f) => f.derive).map((f) => f.path);
    expect(derived.sort()).toEqual([
      'driving/woman_speech_head_motion.mp4',
      'driving/woman_tongue_crossed_eyes_grimace.mp4',
      'portraits/animal_shiba_dog.png',
    ]);
  });
});

describe('AVATAR_TEST_DATA', () => {
  const root = path.join(path.sep, 'repo', 'main');

  it('defaults to ../shared beside the repository (also when blank)', () => {
    expect(resolveTestDataDir({}, root)).toBe(path.join(path.sep, 'repo', 'shared'));
    expect(resolveTestDataDir({ AVATAR_TEST_DATA: '  ' }, root)).toBe(path.join(path.sep, 'repo', 'shared'));
    expect(resolveTestDataDir({})).toBe(path.resolve(repoRoot, '..', 'shared'));
  });

  it('takes an absolute path as it is and resolves a relative one against the repository root', () => {
    expect(resolveTestDataDir({ AVATAR_TEST_DATA: '/data/avatar' }, root)).toBe(path.resolve('/data/avatar'));
    expect(resolveTestDataDir({ AVATAR_TEST_DATA: 'test-data/local' }, root)).toBe(
      path.join(root, 'test-data', 'local'),
    );
    expect(resolveTestDataDir({ AVATAR_TEST_DATA: '../elsewhere' }, root)).toBe(
      path.join(path.sep, 'repo', 'elsewhere'),
    );
  });
});
