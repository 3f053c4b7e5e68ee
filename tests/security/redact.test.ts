/**
 * Credentials out of logs and errors (issue 20, item 7):
 * - a Redis URL's password and ?key= / ?token= values are redacted by redactUrl / redactText and by the logger, in
 *   string fields and in error messages;
 * - `npm start`'s entry (server/main.ts, run as a real process): with its output piped (systemd, docker, CI logs) the
 *   operator key appears nowhere in it (the key stays in <dataDir>/operator-key, which the output names); on a
 *   terminal (a pty from script(1)) the studio link with the key is printed, once.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createLogger, getLogLevel, setLogLevel } from '../../server/logger.js';
import { redactText, redactUrl } from '../../server/util/redact.js';
import { repoRoot } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

describe('redaction', () => {
  it('takes passwords and secret query values out of URLs and text', () => {
    expect(redactUrl('redis://:s3cret-pw@10.0.0.2:6379/0')).toBe('redis://:***@10.0.0.2:6379/0');
    expect(redactUrl('redis://user:s3cret-pw@10.0.0.2:6379')).toBe('redis://user:***@10.0.0.2:6379');
    expect(redactUrl('http://h:8080/?key=abc123&room=r1')).toBe('http://h:8080/?key=***&room=r1');
    expect(redactUrl('redis://10.0.0.2:6379')).toBe('redis://10.0.0.2:6379');
    const t = redactText('cannot reach redis://:s3cret-pw@h:1 after GET /?room=r&key=abc123 (token=t0k)');
    expect(t).not.toMatch(/s3cret-pw|abc123/);
    expect(t).toContain('redis://:***@h:1');
  });

  it('the logger redacts string fields and error messages', () => {
    const lines: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    const level = getLogLevel();
    setLogLevel('debug');
    process.stderr.write = (chunk: string) => (lines.push(String(chunk)), true);
    try {
      createLogger('t').warn('redis connection error', {
        url: 'redis://:s3cret-pw@10.0.0.2:6379',
        link: 'http://127.0.0.1:8080/?key=operator-key-abcdef0123456789',
        err: new Error('connect ECONNREFUSED redis://:s3cret-pw@10.0.0.2:6379'),
      });
    } finally {
      process.stderr.write = write;
      setLogLevel(level);
    }
    const out = lines.join('');
    expect(out).toContain('redis connection error');
    expect(out).not.toContain('s3cret-pw');
    expect(out).not.toContain('operator-key-abcdef0123456789');
  });
});

/** Runs server/main.ts (optionally under script(1) for a terminal) until `done(output)` holds; returns the output. */
async function runMain(tty: boolean, done: (out: string) => boolean): Promise<{ out: string; dataDir: string }> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'avatar-main-'));
  const cmd = [process.execPath, '--import', 'tsx', path.join(repoRoot, 'server', 'main.ts')];
  const env = {
    ...process.env,
    PORT: '0',
    AVATAR_DATA_DIR: dataDir,
    AVATAR_ENGINE: 'portrait',
    FANOUT: 'direct',
    LOG_LEVEL: 'info',
  };
  const proc = tty
    ? spawn('script', ['-q', '-e', '-c', cmd.map((a) => `'${a}'`).join(' '), '/dev/null'], { cwd: repoRoot, env })
    : spawn(cmd[0]!, cmd.slice(1), { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
  try {
    await waitFor(() => done(out), 60_000, 'server ready');
  } finally {
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    await exited;
  }
  return { out, dataDir };
}

describe("npm start's output", () => {
  it('piped: names the key file, never the operator key', async () => {
    const { out, dataDir } = await runMain(false, (o) => /Studio: http/.test(o) && o.includes('server ready'));
    try {
      const key = (await readFile(path.join(dataDir, 'operator-key'), 'utf8')).trim();
      expect(key.length).toBeGreaterThanOrEqual(16);
      expect(out).not.toContain(key);
      expect(out).not.toContain(encodeURIComponent(key));
      expect(out).toContain(path.join(dataDir, 'operator-key'));
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 90_000);

  it.runIf(existsSync('/usr/bin/script'))(
    'on a terminal: the studio link with the key, once',
    async () => {
      const { out, dataDir } = await runMain(true, (o) => /\?key=\S+/.test(o) && o.includes('server ready'));
      try {
        const key = (await readFile(path.join(dataDir, 'operator-key'), 'utf8')).trim();
        const links = out.match(/Studio \(signs this browser in\): http:\/\/127\.0\.0\.1:\d+\/\?key=(\S+)/g) ?? [];
        expect(links).toHaveLength(1);
        expect(out.split(encodeURIComponent(key)).length - 1).toBe(1);
      } finally {
        await rm(dataDir, { recursive: true, force: true });
      }
    },
    90_000,
  );
});
