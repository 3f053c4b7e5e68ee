/**
 * Licenses as a user reads them: an MIT LICENSE for the code, and a README row for every model file with its terms;
 * the refiner's weights are called research-only everywhere and MIT nowhere (models/tools/refiner/terms.py states
 * them; models/tools/tests/test_refiner_terms.py checks the card and the manifest against it).
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/media.js';

const read = (p: string): Promise<string> => readFile(path.join(repoRoot, p), 'utf8');

/** The README's "Models and licenses" section. */
async function modelsSection(): Promise<string> {
  const readme = await read('README.md');
  const start = readme.indexOf('## Models and licenses\n');
  expect(start, 'README has a "Models and licenses" section').toBeGreaterThanOrEqual(0);
  const end = readme.indexOf('\n## ', start + 1);
  return readme.slice(start, end < 0 ? undefined : end);
}

describe('licenses', () => {
  it('the code is MIT: LICENSE and package.json agree', async () => {
    expect((await read('LICENSE')).split('\n')[0]).toBe('MIT License');
    expect((JSON.parse(await read('package.json')) as { license?: string }).license).toBe('MIT');
  });

  it('the README lists every model file of the packs and models/face with its license', async () => {
    const section = await modelsSection();
    const files: string[] = [];
    for (const pack of ['default', 'refiner']) {
      for (const f of await readdir(path.join(repoRoot, 'models', pack))) if (f.endsWith('.onnx')) files.push(f);
    }
    // models/face/*.onnx are built at set-up (git-ignored): sources.json names them.
    const sources = JSON.parse(await read('models/face/sources.json')) as { models: Record<string, unknown> };
    files.push(...Object.keys(sources.models).map((m) => `${m}.onnx`));
    expect(files.length).toBeGreaterThan(8);
    for (const f of files) expect(section, f).toMatch(new RegExp(`\`(models/[a-z]+/)?${f.replace('.', '\\.')}\``));
  });

  it('the refiner weights are research-only wherever their terms are given, never MIT', async () => {
    const manifest = JSON.parse(await read('models/refiner/manifest.json')) as { license: string };
    expect(manifest.license).toMatch(/^research-only/);
    expect(manifest.license).not.toContain('MIT');
    const card = await read('models/refiner/MODEL_CARD.md');
    const terms = /\*\*License and use:\*\*[^]*?\n\n/.exec(card)?.[0] ?? '';
    expect(terms).toContain('research-only, not MIT');
    const row = (await modelsSection()).split('\n').find((l) => l.includes('models/refiner/encoder.onnx')) ?? '';
    expect(row).toContain('research-only, not MIT');
    for (const src of ['models/tools/refiner/export.py', 'models/tools/refiner/model_card.py']) {
      expect(await read(src), src).not.toMatch(/weights and code of this project|weights and code are this project's/);
    }
  });
});
