/**
 * Bundles g2gProbe.ts into one classic script and adds it to a Playwright page (like browserInject.ts does for the
 * transport probe), as `window.__g2g`.
 */
import type { Page } from 'playwright-core';
import { pageScript } from './browserInject.js';

export type { AudioOnset, G2gProbe, GraySample, Region, RegionSample } from './g2gProbe.js';

/** The probe as a script (built once per process). */
export function g2gScript(): Promise<string> {
  return pageScript('g2gProbe.ts');
}

/** Adds `window.__g2g` to every document the page loads from now on. */
export async function installG2g(page: Page): Promise<void> {
  await page.addInitScript({ content: await g2gScript() });
}

/** Decodes a GraySample's base64 bytes. */
export function sampleBytes(gray: string): Uint8Array {
  return new Uint8Array(Buffer.from(gray, 'base64'));
}
