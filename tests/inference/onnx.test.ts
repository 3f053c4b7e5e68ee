import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { OnnxModel, Tensor } from '../../server/inference/onnx.js';
import { projectRoot } from '../../server/config.js';

const FIELDS = path.join(projectRoot, 'models', 'default', 'fields.onnx');

function feeds(): Record<string, Tensor> {
  const coef = new Float32Array(2 * 99);
  coef[2 * 97] = 1; // identity affine part: ax = (1, 0), ay = (0, 1)
  coef[2 * 98 + 1] = 1;
  return {
    ctrl: new Tensor(
      'float32',
      new Float32Array(192).map((_, i) => Math.sin(i)),
      [1, 96, 2],
    ),
    coef: new Tensor('float32', coef, [1, 99, 2]),
    masks: new Tensor('float32', new Float32Array(4 * 128 * 128), [1, 4, 128, 128]),
    gaze: new Tensor('float32', new Float32Array(2), [1, 2]),
    mouth: new Tensor('float32', Float32Array.from([0, 0, 1, 0, 0.2, 0, 0.1, 0]), [1, 8]),
    colors: new Tensor('float32', new Float32Array(15), [1, 5, 3]),
    region: new Tensor('float32', Float32Array.from([-1, -1, 1, 1]), [1, 4]),
  };
}

describe('OnnxModel', () => {
  it('shares one session per model and options, runs synchronously into preallocated outputs, releases with the last handle', async () => {
    const a = await OnnxModel.load(FIELDS);
    const b = await OnnxModel.load(FIELDS);
    expect(a.inputNames).toEqual(['ctrl', 'coef', 'masks', 'gaze', 'mouth', 'colors', 'region']);
    expect(a.outputs.find((o) => o.name === 'grid')).toEqual({
      name: 'grid',
      type: 'float32',
      shape: [1, 2, 128, 128],
    });
    const grid = new Float32Array(2 * 128 * 128);
    const out = a.run(feeds(), { grid: new Tensor('float32', grid, [1, 2, 128, 128]), overlay: null });
    // Identity map: the first node is the region's top-left corner, the last the bottom-right.
    expect(grid[0]).toBeCloseTo(-1, 4);
    expect(grid[128 * 128 - 1]).toBeCloseTo(1, 4);
    expect((out.overlay!.data as Float32Array).length).toBe(4 * 128 * 128);
    a.close();
    a.close();
    expect(a.closed).toBe(true);
    expect(() => a.run(feeds(), { grid: null })).toThrow(/closed/);
    // The other handle still runs: the session lives until its last handle closes.
    expect(b.run(feeds(), { grid: null }).grid!.dims).toEqual([1, 2, 128, 128]);
    b.close();
  });

  it('fails to load a file that is not a model', async () => {
    await expect(OnnxModel.load(path.join(projectRoot, 'models', 'default', 'manifest.json'))).rejects.toThrow();
  });
});
