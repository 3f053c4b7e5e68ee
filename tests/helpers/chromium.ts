/**
 * Real Chromium for end-to-end tests and benchmarks (playwright-core + Debian's /usr/bin/chromium).
 * Each browser gets its own temporary profile folder, removed on close. Flags from SETUP-FACTS.md: a fake camera
 * from a .y4m file (Chromium loops it), a fake microphone (Chromium's beep), loopback ICE candidates allowed, and
 * autoplay with sound without a gesture.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';

export const chromiumPath = '/usr/bin/chromium';

let built: Promise<void> | null = null;

async function newestMtime(dir: string, exts: readonly string[]): Promise<number> {
  let newest = 0;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.name === 'dist' || e.name.startsWith('.')) continue;
    const full = path.join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, await newestMtime(full, exts));
    else if (exts.some((x) => e.name.endsWith(x))) newest = Math.max(newest, (await stat(full)).mtimeMs);
  }
  return newest;
}

/**
 * Bundles the client pages (scripts/build-client.mjs) once per process when client/dist is older than the client
 * sources, so that `npx vitest run tests/e2e` without `npm test` serves the current pages.
 */
export function buildClient(): Promise<void> {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
  built ??= (async () => {
    const src = Math.max(
      await newestMtime(path.join(root, 'client'), ['.ts', '.html', '.css']),
      (await stat(path.join(root, 'server', 'types', 'protocol.ts'))).mtimeMs,
      // The face tracker's worker bundles the server's mesh tracking code.
      await newestMtime(path.join(root, 'server', 'vision'), ['.ts']),
    );
    const out = await Promise.all(
      ['studio.js', 'viewer.js', 'face-tracker-worker.js'].map((f) =>
        stat(path.join(root, 'client', 'dist', f)).then(
          (s) => s.mtimeMs,
          () => 0,
        ),
      ),
    );
    if (Math.min(...out) > src) return;
    await new Promise<void>((resolve, reject) => {
      execFile(process.execPath, [path.join(root, 'scripts', 'build-client.mjs')], (err, _stdout, stderr) =>
        err ? reject(new Error(`client build failed: ${stderr}`)) : resolve(),
      );
    });
  })();
  return built;
}

export interface ChromiumOptions {
  /** .y4m file for the fake camera; without it Chromium shows its own test pattern. */
  fakeVideo?: string;
  /** More command-line flags. */
  args?: string[];
  /** Collect the page's console lines (for failure messages); default true. */
  captureConsole?: boolean;
}

export function chromiumArgs(opts: ChromiumOptions = {}): string[] {
  const args = [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    '--allow-loopback-in-peer-connection',
    '--autoplay-policy=no-user-gesture-required',
    // Timers and rendering of a headless page in the background must not be throttled: we count frames.
    '--disable-background-timer-throttling',
    '--disable-renderer-backgrounding',
    '--disable-backgrounding-occluded-windows',
  ];
  if (opts.fakeVideo) args.push(`--use-file-for-fake-video-capture=${opts.fakeVideo}`);
  return [...args, ...(opts.args ?? [])];
}

/** One Chromium with its own profile; `close()` is idempotent and removes the profile. */
export class ChromiumBrowser {
  readonly context: BrowserContext;
  readonly page: Page;
  /** Console lines and page errors, newest last (bounded). */
  readonly logs: string[] = [];
  readonly #profile: string;
  #closed = false;

  private constructor(context: BrowserContext, page: Page, profile: string) {
    this.context = context;
    this.page = page;
    this.#profile = profile;
  }

  static async launch(opts: ChromiumOptions = {}): Promise<ChromiumBrowser> {
    const profile = await mkdtemp(path.join(os.tmpdir(), 'avatar-chromium-'));
    let context: BrowserContext;
    try {
      context = await chromium.launchPersistentContext(profile, {
        executablePath: chromiumPath,
        headless: true,
        args: chromiumArgs(opts),
        viewport: { width: 1280, height: 800 },
        ignoreDefaultArgs: ['--mute-audio'],
      });
    } catch (err) {
      await rm(profile, { recursive: true, force: true });
      throw err;
    }
    const page = context.pages()[0] ?? (await context.newPage());
    const b = new ChromiumBrowser(context, page, profile);
    if (opts.captureConsole ?? true) {
      const push = (line: string): void => {
        b.logs.push(line);
        if (b.logs.length > 200) b.logs.shift();
      };
      page.on('console', (m) =>
        push(`[${m.type()}] ${m.text()}${m.type() === 'error' && m.location().url ? ` (${m.location().url})` : ''}`),
      );
      page.on('pageerror', (e) => push(`[pageerror] ${e.message}`));
    }
    return b;
  }

  get closed(): boolean {
    return this.#closed;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.context.close();
    await rm(this.#profile, { recursive: true, force: true });
  }
}
