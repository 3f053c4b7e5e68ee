/**
 * The Python under models/tools (the refiner training package, the default pack's generator builder, the tfjs
 * converter) held to the same bar as the TypeScript: its pytest unit tests pass (the converter's own file runs in
 * tests/convert), pyflakes reports nothing, and mypy (models/tools/mypy.ini) finds no type error. Each check fails with
 * the tool's own output. Debian's python3-pytest, python3-pyflakes and mypy are in scripts/setup.sh's package list: a
 * missing tool fails here with that hint, it is not skipped.
 */
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/media.js';

const PYTHON = '/usr/bin/python3';
const TOOLS = path.join(repoRoot, 'models', 'tools');
const SETUP_HINT = 'bash scripts/setup.sh installs it';

interface Run {
  code: number;
  out: string;
}

function run(cmd: string, args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd: TOOLS, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code: code ?? 1, out }));
  });
}

function hasModule(name: string): boolean {
  return spawnSync(PYTHON, ['-c', `import ${name}`], { stdio: 'ignore' }).status === 0;
}

describe('models/tools Python', () => {
  it('passes its pytest unit tests', { timeout: 900_000 }, async () => {
    expect(hasModule('pytest'), `python3-pytest is not installed for ${PYTHON}: ${SETUP_HINT}`).toBe(true);
    const r = await run(PYTHON, [
      '-m',
      'pytest',
      '-q',
      '-p',
      'no:cacheprovider',
      'tests',
      '--ignore=tests/test_tfjs_convert.py',
    ]);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/\d+ passed/);
    expect(r.out, 'a test was skipped').not.toMatch(/skipped/);
  });

  it('is clean under pyflakes', { timeout: 120_000 }, async () => {
    expect(hasModule('pyflakes'), `python3-pyflakes is not installed for ${PYTHON}: ${SETUP_HINT}`).toBe(true);
    const r = await run(PYTHON, ['-m', 'pyflakes', '.']);
    expect(r.out).toBe('');
    expect(r.code).toBe(0);
  });

  it('type-checks under mypy (models/tools/mypy.ini)', { timeout: 240_000 }, async () => {
    expect(hasModule('mypy'), `mypy is not installed for ${PYTHON}: ${SETUP_HINT}`).toBe(true);
    const r = await run(PYTHON, ['-m', 'mypy', 'refiner', 'tfjs_convert', 'build_generator.py', 'tests']);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/^Success: no issues found in \d+ source files/);
  });
});
