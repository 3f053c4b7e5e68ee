/**
 * A real TURN server for tests (Debian's coturn, `turnserver`) run with the deployment's infra/coturn/turnserver.conf
 * (coturn's shared-secret REST scheme, no TLS, no CLI), started on 127.0.0.1 on a free port with a random
 * `static-auth-secret`, relaying on 127.0.0.1, with no persistence (its SQLite file and config live in a temporary
 * folder removed by stop()). Loopback peers are allowed (`allow-loopback-peers`, which coturn refuses by default),
 * because every peer of the tests is on 127.0.0.1. stop() sends SIGTERM and waits for the process to exit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from './wait.js';

export const turnserverPath = '/usr/bin/turnserver';
/** The deployment's coturn config, which the test server runs with its test settings appended. */
export const deployedConf = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  'infra',
  'coturn',
  'turnserver.conf',
);
export const haveCoturn = existsSync(turnserverPath);

export interface TestCoturn {
  /** turn:127.0.0.1:PORT?transport=udp */
  url: string;
  port: number;
  /** The static-auth-secret the server must mint credentials with. */
  secret: string;
  /** The last lines coturn logged (for failure messages). */
  log(): string;
  stop(): Promise<void>;
}

/** A port free for both TCP and UDP on 127.0.0.1 (coturn listens on both). */
async function freeTcpUdpPort(): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = net.createServer();
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const udpFree = await new Promise<boolean>((resolve) => {
      const u = dgram.createSocket('udp4');
      u.once('error', () => resolve(false));
      u.bind(port, '127.0.0.1', () => u.close(() => resolve(true)));
    });
    if (udpFree) return port;
  }
  throw new Error('no port free for both TCP and UDP on 127.0.0.1');
}

/** Sends a STUN Binding request (RFC 5389) over UDP; true when a Binding success response comes back. */
function stunBinding(port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket('udp4');
    const txId = randomBytes(12);
    const req = Buffer.alloc(20);
    req.writeUInt16BE(0x0001, 0); // Binding request
    req.writeUInt16BE(0, 2); // no attributes
    req.writeUInt32BE(0x2112a442, 4); // magic cookie
    txId.copy(req, 8);
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      sock.close();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.on('message', (msg) =>
      done(msg.length >= 20 && msg.readUInt16BE(0) === 0x0101 && msg.subarray(8, 20).equals(txId)),
    );
    sock.on('error', () => done(false));
    sock.send(req, port, '127.0.0.1');
  });
}

/**
 * Starts coturn. Its relay ports come from a random 200-port block below Linux's ephemeral range (coturn tries another
 * port of the block when one is taken).
 * @throws Error saying to run scripts/setup.sh when coturn is not installed; Error with coturn's log when it does not
 * answer STUN within 15 s.
 */
export async function startCoturn(): Promise<TestCoturn> {
  if (!haveCoturn) {
    throw new Error(
      `coturn is not installed (${turnserverPath} is missing): run \`bash scripts/setup.sh\`, which installs the Debian package coturn`,
    );
  }
  const port = await freeTcpUdpPort();
  const secret = randomBytes(24).toString('base64url');
  const minPort = 20000 + 200 * Math.floor(Math.random() * 60);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'avatar-coturn-'));
  // The deployment's own file (infra/coturn/turnserver.conf: the shared-secret scheme, the peer ranges it refuses),
  // with what a test changes: loopback addresses, free ports, a random secret, a private database. The secret goes
  // in a config file only this user can read, not on the command line (readable in /proc).
  const deployed = (await readFile(deployedConf, 'utf8'))
    .split('\n')
    .filter((l) => !/^\s*(listening-port|min-port|max-port|static-auth-secret|userdb|pidfile)\b/.test(l));
  const conf = path.join(dir, 'turnserver.conf');
  await writeFile(
    conf,
    [
      ...deployed,
      '# tests/helpers/coturn.ts',
      'listening-ip=127.0.0.1',
      'relay-ip=127.0.0.1',
      `listening-port=${port}`,
      `min-port=${minPort}`,
      `max-port=${minPort + 199}`,
      `static-auth-secret=${secret}`,
      'no-tcp-relay',
      // Every peer of the tests is on 127.0.0.1; coturn refuses loopback peers unless told (never in production).
      'allow-loopback-peers',
      `userdb=${path.join(dir, 'turndb')}`,
      `pidfile=${path.join(dir, 'turnserver.pid')}`,
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  const proc: ChildProcess = spawn(turnserverPath, ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  // Bounded: the last 64 KiB of what coturn logged.
  let logText = '';
  const keep = (d: Buffer): void => {
    logText = (logText + d.toString()).slice(-65536);
  };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  let exited = false;
  const exit = new Promise<void>((resolve) => {
    proc.once('exit', () => {
      exited = true;
      resolve();
    });
  });
  const cleanup = (): Promise<void> => rm(dir, { recursive: true, force: true });
  try {
    await waitFor(async () => exited || (await stunBinding(port)), 15_000, `coturn answering STUN on UDP port ${port}`);
  } catch (err) {
    proc.kill('SIGKILL');
    await exit;
    await cleanup();
    throw new Error(`coturn did not start: ${(err as Error).message}\n${logText.slice(-4000)}`);
  }
  if (exited) {
    await cleanup();
    throw new Error(`coturn exited at start (port ${port}):\n${logText.slice(-4000)}`);
  }
  let stopping: Promise<void> | null = null;
  return {
    url: `turn:127.0.0.1:${port}?transport=udp`,
    port,
    secret,
    log: () => logText,
    stop() {
      stopping ??= (async () => {
        if (!exited) proc.kill('SIGTERM');
        await exit;
        await cleanup();
      })();
      return stopping;
    },
  };
}
