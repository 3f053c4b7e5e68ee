/**
 * Bundles benchmarks/lib/browserProbe.ts into one classic script and installs it in a Playwright page before any
 * page script runs, so the probe sees every RTCPeerConnection the page makes. Shared by the e2e test and the
 * transport benchmark.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import type { Page } from 'playwright-core';

const bundles = new Map<string, Promise<string>>();

/** Bundles a file of benchmarks/lib into one classic browser script (built once per process and file). */
export function pageScript(file: string): Promise<string> {
  let b = bundles.get(file);
  if (!b) {
    b = esbuild
      .build({
        entryPoints: [path.join(path.dirname(fileURLToPath(import.meta.url)), file)],
        bundle: true,
        write: false,
        format: 'iife',
        platform: 'browser',
        target: 'chrome100',
      })
      .then((r) => r.outputFiles[0]!.text);
    bundles.set(file, b);
  }
  return b;
}

/** The probe as a script (built once per process). */
export function probeScript(): Promise<string> {
  return pageScript('browserProbe.ts');
}

/** Adds the probe to every document the page loads from now on. */
export async function installProbe(page: Page): Promise<void> {
  await page.addInitScript({ content: await probeScript() });
}
