/**
 * Shared steps of the default-engine e2e test and the glass-to-glass benchmark: a portrait uploaded (with consent)
 * into a room through the REST API, the performer page started, the viewer page playing, and the prepared portrait
 * read back as grayscale for comparisons and landmark analysis.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Page } from 'playwright-core';
import sharp from 'sharp';
import type { GrayImage } from '../../server/types/image.js';
import { TEST_API_KEY } from './server.js';
import { waitFor } from './wait.js';

export interface OpenedRoom {
  portraitId: string;
  roomId: string;
  performerUrl: string;
  viewerUrl: string;
}

/**
 * Uploads `portraitFile` (consent given) and creates a room with it; `apiKey` is sent as the management calls' bearer
 * token (default: the test servers' key; a server without configured keys has its own: server.operatorKey).
 */
export async function openRoom(
  base: string,
  portraitFile: string,
  apiKey: string | null = TEST_API_KEY,
): Promise<OpenedRoom> {
  const auth: Record<string, string> = apiKey ? { authorization: `Bearer ${apiKey}` } : {};
  const form = new FormData();
  form.append('consent', 'true');
  form.append('file', new Blob([await readFile(portraitFile)]), path.basename(portraitFile));
  const up = await fetch(`${base}/api/portraits`, { method: 'POST', body: form, headers: auth });
  if (up.status !== 201) throw new Error(`portrait upload failed: ${up.status} ${await up.text()}`);
  const { id: portraitId } = (await up.json()) as { id: string };
  const rr = await fetch(`${base}/api/rooms`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...auth },
    body: JSON.stringify({ portraitId }),
  });
  if (rr.status !== 201) throw new Error(`room creation failed: ${rr.status} ${await rr.text()}`);
  const room = (await rr.json()) as { roomId: string; performerUrl: string; viewerUrl: string };
  return { portraitId, ...room };
}

type StudioWin = {
  __studio: {
    publishState: string;
    publishMode: 'video' | 'private' | null;
    privateMode: { available: boolean | null };
    room: { width: number; height: number } | null;
  };
};
type ViewerWin = { __avatar: { frames: number } };

/**
 * Opens the performer link (avatar preview off) in publish `mode` (default 'video': the webcam's video goes to the
 * server; 'private': the studio tracks the face and sends expressions), presses Start and waits until the publish is
 * connected in that mode. Returns the room's output size as the studio reports it.
 */
export async function startPerformer(
  page: Page,
  performerUrl: string,
  timeoutMs = 30_000,
  mode: 'video' | 'private' = 'video',
): Promise<{ width: number; height: number }> {
  await page.goto(`${performerUrl}&preview=0&mode=${mode}`);
  if (mode === 'private')
    await waitFor(
      () => page.evaluate(() => (window as unknown as StudioWin).__studio.privateMode.available === true),
      Math.max(timeoutMs, 90_000),
      'the studio able to run private mode',
      100,
    );
  await waitFor(() => page.locator('#start:not([disabled])').count(), timeoutMs, 'start enabled');
  await page.locator('#start').click();
  await waitFor(
    () =>
      page.evaluate((m) => {
        const st = (window as unknown as StudioWin).__studio;
        return st.publishState === 'connected' && st.publishMode === m;
      }, mode),
    timeoutMs,
    `performer connected in ${mode} mode`,
  );
  const room = await page.evaluate(() => (window as unknown as StudioWin).__studio.room);
  if (!room) throw new Error('the studio has no room');
  return { width: room.width, height: room.height };
}

/** Opens the viewer link and waits until it has presented `frames` frames. */
export async function startViewer(page: Page, viewerUrl: string, frames = 10, timeoutMs = 60_000): Promise<void> {
  await page.goto(viewerUrl);
  await waitFor(
    () => page.evaluate((n) => (window as unknown as ViewerWin).__avatar.frames > n, frames),
    timeoutMs,
    'viewer frames',
  );
}

/** The server's normalised portrait (`apiKey`: the owner's) as width×height grayscale (stretched to fill, like a canvas draw of the video). */
export async function portraitGray(
  base: string,
  portraitId: string,
  width: number,
  height: number,
  apiKey: string | null = TEST_API_KEY,
): Promise<GrayImage> {
  const res = await fetch(`${base}/api/portraits/${portraitId}/image`, {
    headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {},
  });
  if (res.status !== 200) throw new Error(`portrait image: ${res.status}`);
  const data = await sharp(Buffer.from(await res.arrayBuffer()))
    .resize(width, height, { fit: 'fill' })
    .grayscale()
    .raw()
    .toBuffer();
  return { width, height, data: new Uint8Array(data) };
}
