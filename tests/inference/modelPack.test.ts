import { cpSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ModelPack, parseManifest } from '../../server/inference/modelPack.js';
import { ModelPackError } from '../../server/errors.js';
import { projectRoot } from '../../server/config.js';

const PACK = path.join(projectRoot, 'models', 'default');

async function refused(dir: string): Promise<ModelPackError> {
  try {
    const p = await ModelPack.load(dir);
    p.close();
  } catch (err) {
    expect(err).toBeInstanceOf(ModelPackError);
    return err as ModelPackError;
  }
  throw new Error('the pack was accepted');
}

describe('ModelPack', () => {
  let dir: string;
  beforeEach(() => {
    dir = path.join(mkdtempSync(path.join(os.tmpdir(), 'pack-')), 'default');
    cpSync(PACK, dir, { recursive: true });
  });
  afterEach(() => {
    rmSync(path.dirname(dir), { recursive: true, force: true });
  });

  const manifest = (): Record<string, unknown> & { files: Record<string, unknown>[] } =>
    JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as Record<string, unknown> & {
      files: Record<string, unknown>[];
    };
  const writeManifest = (m: unknown): void => writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(m));

  it('loads the committed pack and matches the sessions to the manifest', async () => {
    const pack = await ModelPack.load(dir);
    try {
      expect(pack.name).toBe('default');
      expect(pack.manifest.files.map((f) => f.role).sort()).toEqual(['fields', 'generator']);
      const gen = pack.model('generator');
      expect(gen.inputNames).toContain('source');
      expect(gen.outputNames).toEqual(['y', 'uv', 'rgb']);
      expect(pack.model('fields').outputNames).toEqual(['grid', 'overlay']);
    } finally {
      pack.close();
      pack.close(); // idempotent
    }
    expect(pack.closed).toBe(true);
    expect(() => pack.model('generator')).toThrow(ModelPackError);
  });

  it('refuses a missing file, naming the pack and the file', async () => {
    unlinkSync(path.join(dir, 'fields.onnx'));
    const err = await refused(dir);
    expect(err.pack).toBe('default');
    expect(err.file).toBe('fields.onnx');
    expect(err.message).toMatch(/missing/);
  });

  it('refuses a file whose sha256 differs from the manifest', async () => {
    const f = path.join(dir, 'generator.onnx');
    const bytes = readFileSync(f);
    bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 0xff;
    writeFileSync(f, bytes);
    const err = await refused(dir);
    expect(err.file).toBe('generator.onnx');
    expect(err.message).toMatch(/sha256 mismatch/);
  });

  it('refuses a shape that does not match the model', async () => {
    const m = manifest();
    const inputs = m.files.find((f) => f.role === 'generator')!.inputs as { name: string; shape: unknown[] }[];
    inputs.find((v) => v.name === 'ctrl')!.shape = [1, 95, 2];
    writeManifest(m);
    const err = await refused(dir);
    expect(err.file).toBe('generator.onnx');
    expect(err.message).toMatch(/input "ctrl" shape: manifest \[1, 95, 2\], model \[1, 96, 2\]/);
  });

  it('refuses a fixed dimension where the model has a dynamic one, and a wrong dtype', async () => {
    const m = manifest();
    const outputs = m.files.find((f) => f.role === 'generator')!.outputs as {
      name: string;
      shape: unknown[];
      dtype: string;
    }[];
    outputs.find((v) => v.name === 'y')!.shape = [1, 1, 360, 304];
    writeManifest(m);
    expect((await refused(dir)).message).toMatch(/output "y" shape/);
    outputs.find((v) => v.name === 'y')!.shape = [1, 1, 'H', 'W'];
    outputs.find((v) => v.name === 'y')!.dtype = 'float32';
    writeManifest(m);
    expect((await refused(dir)).message).toMatch(/output "y" dtype: manifest float32, model uint8/);
  });

  it('refuses input names that differ from the model', async () => {
    const m = manifest();
    const inputs = m.files.find((f) => f.role === 'fields')!.inputs as { name: string }[];
    inputs[0]!.name = 'control_points';
    writeManifest(m);
    const err = await refused(dir);
    expect(err.file).toBe('fields.onnx');
    expect(err.message).toMatch(/input names differ/);
  });

  it('refuses bad manifest JSON and missing fields, naming manifest.json', async () => {
    writeFileSync(path.join(dir, 'manifest.json'), '{"name": "default", ');
    const err = await refused(dir);
    expect(err.file).toBe('manifest.json');
    expect(err.message).toMatch(/not valid JSON/);
    unlinkSync(path.join(dir, 'manifest.json'));
    expect((await refused(dir)).message).toMatch(/manifest\.json.*cannot be read/);
  });

  it('refuses a manifest without a license or with a path leaving the pack', () => {
    const good = JSON.parse(readFileSync(path.join(PACK, 'manifest.json'), 'utf8')) as Record<string, unknown> & {
      files: Record<string, unknown>[];
    };
    const noLicense = { ...good, license: undefined };
    expect(() => parseManifest('p', JSON.stringify(noLicense))).toThrow(/"license" must be a non-empty string/);
    const escape = { ...good, files: [{ ...good.files[0], path: '../x.onnx' }] };
    expect(() => parseManifest('p', JSON.stringify(escape))).toThrow(/must stay inside the pack/);
    const badSha = { ...good, files: [{ ...good.files[0], sha256: 'abc' }] };
    expect(() => parseManifest('p', JSON.stringify(badSha))).toThrow(/64 hex digits/);
    expect(parseManifest('p', JSON.stringify(good)).files).toHaveLength(2);
    // A refiner step network may say which source picture it reads; anything else is refused by name.
    const aligned = { ...good, files: [{ ...good.files[0], source: 'aligned' }, good.files[1]] };
    expect(parseManifest('p', JSON.stringify(aligned)).files.map((f) => f.source)).toEqual(['aligned', undefined]);
    const badSource = { ...good, files: [{ ...good.files[0], source: 'warped' }] };
    expect(() => parseManifest('p', JSON.stringify(badSource))).toThrow(
      /"files\[0\]\.source" must be "region" or "aligned"/,
    );
    const features = { ...good, files: [{ ...good.files[0], residual: 'features' }, good.files[1]] };
    expect(parseManifest('p', JSON.stringify(features)).files[0]?.residual).toBe('features');
    const badResidual = { ...good, files: [{ ...good.files[0], residual: 'everywhere' }] };
    expect(() => parseManifest('p', JSON.stringify(badResidual))).toThrow(
      /"files\[0\]\.residual" must be "paste" or "features"/,
    );
  });
});
