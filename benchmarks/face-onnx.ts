/**
 * `npm run bench -- face-onnx [--runs N]`
 *
 * Speed of the face models converted by models/tools/tfjs_convert (models/face/*.onnx, built by scripts/setup.sh) in
 * onnxruntime-node on the CPU with one intra-op thread (sequential execution, full graph optimisation), and of the
 * same tfjs graph models on TensorFlow.js's WASM backend (what @vladmandic/human runs in server/quality) for
 * comparison. One image per run at each model's input size; the input values do not change the work done, so a fixed
 * pattern in the model's range is used. Wall-clock ms per run after warm-up. Writes benchmarks/results/face-onnx.json.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { loadGraphModel } from '@tensorflow/tfjs-converter';
import * as ort from 'onnxruntime-node';
import { repoRoot } from '../scripts/testData.js';
import { num, parseOptions } from './lib/args.js';
import { summarize, writeResult, type Summary } from './lib/stats.js';

interface Pin {
  package: string;
  dir: string;
  model: string;
  input_range: [number, number];
}
interface ModelJson {
  weightsManifest: { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
  [key: string]: unknown;
}

async function time(runs: number, warmup: number, step: () => Promise<void>): Promise<Summary> {
  for (let i = 0; i < warmup; i++) await step();
  const ms: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await step();
    ms.push(performance.now() - t0);
  }
  return summarize(ms);
}

/** The flags. */
export const OPTIONS = { runs: num(300, { min: 1, integer: true }) };

export async function main(args: string[]): Promise<void> {
  const values = parseOptions('face-onnx', args, OPTIONS);
  const runs = Number(values.runs);
  const faceDir = path.join(repoRoot, 'models', 'face');
  const sources = JSON.parse(await readFile(path.join(faceDir, 'sources.json'), 'utf8')) as {
    models: Record<string, Pin>;
  };
  const require = createRequire(import.meta.url);
  setWasmPaths(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm')) + path.sep);
  await tf.setBackend('wasm');

  const models: Record<string, unknown> = {};
  for (const [name, pin] of Object.entries(sources.models)) {
    const session = await ort.InferenceSession.create(path.join(faceDir, `${name}.onnx`), {
      intraOpNumThreads: 1,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
    });
    const dims = session.inputMetadata[0]!;
    const shape = (dims.isTensor ? dims.shape : []).map((d) => (typeof d === 'number' ? d : 1));
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    const [lo, hi] = pin.input_range;
    for (let i = 0; i < data.length; i++) data[i] = lo + ((i * 7919) % 256) * ((hi - lo) / 255);
    const feeds = { input: new ort.Tensor('float32', data, shape) };
    const onnx = await time(runs, 20, async () => {
      await session.run(feeds);
    });
    await session.release();

    const dir = path.join(repoRoot, 'node_modules', pin.package, pin.dir);
    const json = JSON.parse(await readFile(path.join(dir, pin.model), 'utf8')) as ModelJson;
    const all = Buffer.concat(
      await Promise.all(json.weightsManifest.flatMap((g) => g.paths.map((p) => readFile(path.join(dir, p))))),
    );
    const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
    const model = await loadGraphModel(
      tf.io.fromMemory({ ...json, weightSpecs: json.weightsManifest.flatMap((g) => g.weights), weightData }),
    );
    const x = tf.tensor(data, shape);
    const tfjsWasm = await time(Math.max(20, Math.round(runs / 5)), 5, async () => {
      const out = model.execute(x, model.outputNodes);
      const list = Array.isArray(out) ? out : [out];
      await Promise.all(list.map((t) => t.data()));
      tf.dispose(list);
    });
    x.dispose();
    model.dispose();
    models[name] = { input: shape, onnxruntimeCpu1Thread: onnx, tfjsWasm };
    process.stderr.write(
      `${name}: onnxruntime p50 ${onnx.p50} ms, p95 ${onnx.p95} ms; tfjs wasm p50 ${tfjsWasm.p50} ms\n`,
    );
  }
  writeResult('face-onnx', {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    onnxruntime: ort.env.versions.common,
    models,
  });
}
