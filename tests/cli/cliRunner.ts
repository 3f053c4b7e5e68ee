/**
 * Runs the `avatar` CLI as a real subprocess (`node bin/avatar.mjs ...`) and collects its output.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { repoRoot } from '../helpers/media.js';

export interface CliRun {
  proc: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** Resolves with the exit code (128 + n for a signal). */
  done: Promise<number>;
}

/**
 * Starts `node bin/avatar.mjs ...args` in the repository root (`env`: the whole environment, default this one's;
 * `node`: the Node binary, default this one).
 */
export function startCli(args: string[], env: NodeJS.ProcessEnv = process.env, node = process.execPath): CliRun {
  const proc = spawn(node, [path.join(repoRoot, 'bin', 'avatar.mjs'), ...args], {
    cwd: repoRoot,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  proc.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const done = new Promise<number>((resolve, reject) => {
    proc.on('error', reject);
    proc.on('close', (code, signal) => resolve(code ?? (signal === 'SIGINT' ? 130 : signal === 'SIGTERM' ? 143 : 128)));
  });
  return { proc, stdout: () => out, stderr: () => err, done };
}

/** Runs the CLI to completion. */
export async function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const r = startCli(args);
  const code = await r.done;
  return { code, stdout: r.stdout(), stderr: r.stderr() };
}

export interface ProbedStream {
  codec_type: string;
  codec_name: string;
  width?: number;
  height?: number;
  nb_read_frames?: string;
}

/** ffprobe's streams of a file, with an exact decoded frame count for video (-count_frames). */
export function ffprobeStreams(file: string): ProbedStream[] {
  const res = spawnSync('ffprobe', ['-v', 'error', '-count_frames', '-show_streams', '-of', 'json', file], {
    encoding: 'utf8',
  });
  if (res.status !== 0) throw new Error(`ffprobe failed on ${file}: ${res.stderr}`);
  return (JSON.parse(res.stdout) as { streams: ProbedStream[] }).streams;
}
