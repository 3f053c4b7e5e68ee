/**
 * The studio page in real Chromium against a real server, without media: room creation when opened without a link,
 * the consent-gated upload with errors shown by code, choosing a portrait, and settings round trips.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildClient, ChromiumBrowser, chromiumPath } from '../helpers/chromium.js';
import { portraitFile } from '../helpers/media.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

type Studio = {
  __studio: {
    state: string;
    room: { roomId: string; portraitId: string | null; settings: Record<string, unknown> } | null;
    lastError: { code: string } | null;
  };
};

const PORTRAIT = portraitFile('real_woman_dark_hair.png');
const haveTools = existsSync(chromiumPath) && existsSync(PORTRAIT);
if (!haveTools) process.stdout.write(`studio e2e skipped: ${chromiumPath} or the shared media is missing\n`);

describe.runIf(haveTools)('studio page in Chromium', () => {
  let srv: TestServer | null = null;
  let browser: ChromiumBrowser | null = null;
  let tmp = '';

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'avatar-studio-'));
    await buildClient();
    srv = await startTestServer({ avatar: { engine: 'portrait' } });
    browser = await ChromiumBrowser.launch();
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await srv?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('creates a room, gates the upload on consent, shows error codes, picks a portrait and sends settings', async () => {
    const page = browser!.page;
    const studio = (): Promise<Studio['__studio']> => page.evaluate(() => (window as unknown as Studio).__studio);

    // Opened without a link: the page creates a room and rewrites its URL to the performer link.
    await page.goto(`${srv!.url}/`);
    await waitFor(async () => (await studio()).state === 'joined', 15_000, 'studio joined');
    const url = new URL(page.url());
    const roomId = url.searchParams.get('room');
    expect(roomId).toBeTruthy();
    expect(url.searchParams.get('token')).toBeTruthy();
    expect((await studio()).room?.roomId).toBe(roomId);
    const viewerLink = await page.locator('#viewer-link').inputValue();
    expect(new URL(viewerLink).pathname).toBe('/view');
    expect(new URL(viewerLink).searchParams.get('room')).toBe(roomId);
    expect(srv!.server.rooms.get(roomId!)).toBeDefined();

    // Upload is disabled until a file is chosen and consent is ticked.
    const upload = page.locator('#upload-btn');
    expect(await upload.isDisabled()).toBe(true);
    const junk = path.join(tmp, 'notes.png');
    await writeFile(junk, 'this is not an image');
    await page.locator('#file').setInputFiles(junk);
    expect(await upload.isDisabled()).toBe(true);
    await page.locator('#consent').check();
    expect(await upload.isDisabled()).toBe(false);

    // A file that is not an image: the server's code is shown.
    await upload.click();
    await waitFor(async () => (await page.locator('#upload-status').textContent())?.includes('UNSUPPORTED_MEDIA_TYPE'), 10_000, 'error code shown');
    expect(await page.locator('#upload-status').getAttribute('class')).toContain('error');

    // A real portrait: uploaded, listed, chosen for the room.
    await page.locator('#file').setInputFiles(PORTRAIT);
    if (!(await page.locator('#consent').isChecked())) await page.locator('#consent').check();
    await upload.click();
    const chosen = await waitFor(async () => (await studio()).room?.portraitId, 20_000, 'portrait chosen');
    expect(await page.locator(`#gallery button[data-id="${chosen}"]`).getAttribute('aria-selected')).toBe('true');
    expect(srv!.server.portraits.list().map((p) => p.id)).toContain(chosen);
    // The form resets after a successful upload: consent must be given again for the next one.
    expect(await page.locator('#consent').isChecked()).toBe(false);
    expect(await upload.isDisabled()).toBe(true);

    // Settings go to the server and come back as the room's settings.
    await page.locator('#pose').selectOption('absolute');
    await page.locator('#lips').uncheck();
    await waitFor(
      async () => {
        const s = (await studio()).room?.settings;
        return s?.poseMode === 'absolute' && s.lipRetargeting === false;
      },
      10_000,
      'settings applied',
    );
    const serverSettings = srv!.server.rooms.get(roomId!)!.info.settings;
    expect(serverSettings.poseMode).toBe('absolute');
    expect(serverSettings.lipRetargeting).toBe(false);
    // The only error the page met is the refused upload.
    expect((await studio()).lastError?.code).toBe('UNSUPPORTED_MEDIA_TYPE');
  }, 90_000);
});
