/**
 * A real Redis for tests (Debian's redis-server): started on a free loopback port with no persistence and a password
 * (`--requirepass`, as a deployment must run it: the cluster does not trust whoever can reach Redis), stopped (and
 * waited for) by stop(). `url` carries the password.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { waitFor } from './wait.js';

export const redisServerPath = '/usr/bin/redis-server';
export const haveRedis = existsSync(redisServerPath);

export interface TestRedis {
  /** redis://:PASSWORD@127.0.0.1:PORT */
  url: string;
  /** The same without the password (refused by the server). */
  urlWithoutPassword: string;
  password: string;
  port: number;
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (bound and released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1');
    let buf = '';
    c.setTimeout(500, () => {
      c.destroy();
      resolve(false);
    });
    // Without AUTH the server answers -NOAUTH: it is up all the same.
    c.on('connect', () => c.write('PING\r\n'));
    c.on('data', (d) => {
      buf += d.toString();
      if (buf.includes('\r\n')) {
        c.destroy();
        resolve(buf.startsWith('+PONG') || buf.startsWith('-NOAUTH'));
      }
    });
    c.on('error', () => resolve(false));
  });
}

export async function startRedis(): Promise<TestRedis> {
  const port = await freePort();
  const password = randomBytes(18).toString('base64url');
  // The password reaches redis-server through its standard input (a config file read from '-'), not its command
  // line, which any local user can read in /proc.
  const proc: ChildProcess = spawn(
    redisServerPath,
    ['-', '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'yes'],
    { stdio: ['pipe', 'ignore', 'pipe'] },
  );
  proc.stdin!.end(`requirepass ${password}\n`);
  let exited = false;
  proc.on('exit', () => {
    exited = true;
  });
  await waitFor(async () => exited || (await ping(port)), 10_000, `redis-server on port ${port}`);
  if (exited) throw new Error(`redis-server exited at start (port ${port})`);
  let stopping: Promise<void> | null = null;
  return {
    url: `redis://:${password}@127.0.0.1:${port}`,
    urlWithoutPassword: `redis://127.0.0.1:${port}`,
    password,
    port,
    stop() {
      stopping ??= new Promise<void>((resolve) => {
        if (exited) return resolve();
        proc.once('exit', () => resolve());
        proc.kill('SIGTERM');
      });
      return stopping;
    },
  };
}
