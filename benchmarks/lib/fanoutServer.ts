/**
 * The fan-out benchmark's server, run as its own child process (`node --import tsx benchmarks/lib/fanoutServer.ts
 * '<json>'`) so that its CPU, with its mediasoup worker children, is measured apart from the performer's and the
 * viewers'. The argument is a DeepPartial<Config> merged over the benchmark defaults (loopback, port 0, ICE limited
 * to 127.0.0.1). Prints one line `FANOUT_SERVER {"url":...,"apiKey":...}` on stdout when it listens; SIGTERM closes the server
 * (rooms, peers, workers) and exits.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createServer } from '../../server/app.js';
import { defaultConfig, loadConfig, type Config, type DeepPartial } from '../../server/config.js';
import { READY_PREFIX } from './fanoutProtocol.js';

async function main(): Promise<void> {
  const overrides = JSON.parse(process.argv[2] ?? '{}') as DeepPartial<Config>;
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'avatar-fanout-'));
  // Servers that guard the management API with keys (config.auth.apiKeys) get one for the benchmark; the benchmark
  // sends it as a bearer token either way.
  const apiKey = `ak_${randomBytes(24).toString('base64url')}`;
  const auth = 'auth' in defaultConfig() ? { auth: { apiKeys: [{ name: 'bench', secret: apiKey }] } } : {};
  const config = loadConfig({}, {
    host: '127.0.0.1',
    port: 0,
    logLevel: 'warn',
    dataDir,
    media: { iceAddressAllowList: ['127.0.0.1'] },
    ...auth,
    ...overrides,
  });
  const server = await createServer(config);
  process.stdout.write(`${READY_PREFIX}${JSON.stringify({ url: server.url, pid: process.pid, apiKey })}\n`);
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    const deadline = setTimeout(() => process.exit(1), 10_000);
    deadline.unref();
    server
      .close()
      .then(() => rm(dataDir, { recursive: true, force: true }))
      .then(
        // wrtc's finalizers crash at a natural exit: exit explicitly once everything is closed.
        () => process.exit(0),
        (err: unknown) => {
          process.stderr.write(`fanout server: close failed: ${String(err)}\n`);
          process.exit(1);
        },
      );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  process.once('disconnect', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(
    `fanout server: start failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
