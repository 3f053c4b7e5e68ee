/**
 * `avatar serve`: starts the server exactly as `npm start` does (`npm start` runs this command): the Node check, the
 * client bundle (from a source checkout; the compiled build ships it built), glibc's fixed mmap threshold, then
 * server/serve.ts's runServer with the configuration from the environment (and AVATAR_CONFIG). Exit code 0 after a
 * clean shutdown (SIGINT / SIGTERM), 1 when start-up or shutdown failed, 2 on a usage error.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { unsupportedNode } from '../nodeVersion.js';
import { runServer } from '../serve.js';
import { packageInfo } from '../util/packageInfo.js';

export const usage = `usage: avatar serve

  Starts the server (the same as npm start). Configuration comes from the environment and from the JSON file
  that AVATAR_CONFIG names: PORT (default 8080), HOST (default 127.0.0.1), AVATAR_DATA_DIR, LOG_LEVEL, ...
  (README, "Configuration"). SIGINT or SIGTERM closes rooms, peers and sockets, then exits.
`;

/**
 * glibc's malloc reads MALLOC_MMAP_THRESHOLD_ once, at process start: allocations of 128 KiB and more are then
 * mmapped and given back when freed, so RSS stays flat as rooms come and go (benchmarks/churn.ts). The same value as
 * npm start and infra/Dockerfile set.
 */
export const MALLOC_MMAP_THRESHOLD = '131072';

/** Runs a child process to its end; resolves with its exit code (128 + signal number when a signal ended it). */
function exitCode(child: ReturnType<typeof spawn>): Promise<number> {
  return new Promise((resolve) => {
    child.once('error', () => resolve(1));
    child.once('exit', (code, signal) => {
      if (code !== null) resolve(code);
      else resolve(128 + (signal === 'SIGINT' ? 2 : signal === 'SIGTERM' ? 15 : 9));
    });
  });
}

/**
 * Starts this same command again with the malloc setting in its environment (it cannot take effect in a process that
 * has started). The child gets its own process group so that a terminal's Ctrl-C reaches it once, through this
 * process, rather than twice (the server takes a second signal as "exit now"); SIGINT and SIGTERM are passed on.
 */
async function relaunch(argv: string[]): Promise<number> {
  const script = process.argv[1];
  if (!script) return 1;
  const child = spawn(process.execPath, [...process.execArgv, script, 'serve', ...argv], {
    env: { ...process.env, MALLOC_MMAP_THRESHOLD_: MALLOC_MMAP_THRESHOLD },
    stdio: ['ignore', 'inherit', 'inherit'],
    detached: true,
  });
  const forward = (signal: NodeJS.Signals) => (): void => {
    child.kill(signal);
  };
  const onInt = forward('SIGINT');
  const onTerm = forward('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  try {
    return await exitCode(child);
  } finally {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
  }
}

/** Bundles the client pages (scripts/build-client.mjs, as npm run build:client) when running from source. */
async function buildClient(): Promise<number> {
  if (!import.meta.url.endsWith('.ts')) return 0; // the compiled build (the image) ships client/dist built
  const script = path.join(packageInfo().root, 'scripts', 'build-client.mjs');
  return exitCode(spawn(process.execPath, [script], { stdio: ['ignore', 'inherit', 'inherit'] }));
}

export async function run(argv: string[]): Promise<number> {
  if (argv.length === 1 && (argv[0] === '--help' || argv[0] === '-h')) {
    process.stdout.write(usage);
    return 0;
  }
  if (argv.length > 0) {
    process.stderr.write(`avatar serve: [UNKNOWN_OPTION] unexpected argument "${argv[0]}"\n\n${usage}`);
    return 2;
  }
  const unsupported = unsupportedNode();
  if (unsupported) {
    process.stderr.write(`avatar serve: ${unsupported}\n`);
    return 1;
  }
  if (process.env.MALLOC_MMAP_THRESHOLD_ === undefined) return relaunch(argv);
  const built = await buildClient();
  if (built !== 0) {
    process.stderr.write('avatar serve: the client build failed (scripts/build-client.mjs)\n');
    return 1;
  }
  return runServer(process.env);
}
