import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** Nearest-rank percentile of unsorted samples (q in 0..100). */
export function percentile(samples: readonly number[], q: number): number {
  if (samples.length === 0) return Number.NaN;
  const s = [...samples].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((q / 100) * s.length) - 1));
  return s[i]!;
}

export interface Summary {
  p50: number;
  p95: number;
  mean: number;
  n: number;
}
export function summarize(samples: readonly number[]): Summary {
  const mean = samples.reduce((a, b) => a + b, 0) / Math.max(1, samples.length);
  const r = (v: number): number => Math.round(v * 1000) / 1000;
  return { p50: r(percentile(samples, 50)), p95: r(percentile(samples, 95)), mean: r(mean), n: samples.length };
}

const resultsDir = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'results');

/** Writes benchmarks/results/NAME.json (with machine facts) and prints it. */
export function writeResult(name: string, result: Record<string, unknown>): string {
  mkdirSync(resultsDir, { recursive: true });
  const file = path.join(resultsDir, `${name}.json`);
  const os = process.platform;
  const body = { benchmark: name, date: new Date().toISOString(), node: process.version, os, ...result };
  writeFileSync(file, JSON.stringify(body, null, 2) + '\n');
  process.stdout.write(JSON.stringify(body, null, 2) + '\n');
  return file;
}
