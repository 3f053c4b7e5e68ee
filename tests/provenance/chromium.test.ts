/**
 * Provenance as a real viewer sees it: a real server (port 0), a room, the viewer page in real Chromium. The frames
 * its <video> presents, read back from a canvas, show the "AI avatar" mark in the default corner and carry the
 * watermark naming the room (decoded from every 1-second window of the recording).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { markBox, VisibleMark } from '../../server/provenance/mark.js';
import { idHash, payloadHex, timeSlot } from '../../server/provenance/payload.js';
import { WatermarkDetector } from '../../server/provenance/watermark.js';
import { buildClient, ChromiumBrowser } from '../helpers/chromium.js';
import { openRoom } from '../helpers/g2g.js';
import { correlation, portraitFile } from '../helpers/media.js';
import { isPortFree } from '../helpers/net.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';
import { captureVideoLuma } from './chromiumCapture.js';

let ts: TestServer;
let browser: ChromiumBrowser;

beforeEach(async () => {
  await buildClient();
  ts = await startTestServer({ avatar: { engine: 'portrait' } });
  browser = await ChromiumBrowser.launch();
});
afterEach(async () => {
  await browser.close();
  await ts.stop();
  expect(await isPortFree(ts.port)).toBe(true);
});

describe('provenance in a real Chromium viewer', () => {
  it('the viewer page shows the mark and its recorded frames decode to the room watermark', async () => {
    const key = ts.config.auth.apiKeys[0]?.secret ?? ts.server.operatorKey;
    const room = await openRoom(ts.url, portraitFile('painting_mona_lisa.jpg'), key);
    const page = browser.page;
    await page.goto(room.viewerUrl);
    await waitFor(
      () => page.evaluate(() => (document.getElementById('video') as HTMLVideoElement).videoWidth > 0),
      30_000,
      'video playing',
    );
    const t0 = Date.now();
    const frames = await captureVideoLuma(page, 3000);
    const t1 = Date.now();
    expect(frames.length).toBeGreaterThanOrEqual(3);
    const { width: w, height: h } = frames[0]!;

    // The mark, where the operator's default puts it.
    const grey = { width: w, height: h, data: new Uint8Array(w * h * 1.5).fill(128) };
    new VisibleMark({ corner: ts.config.provenance.mark.corner, opacity: 1 }).apply(grey);
    const box = markBox(w, h, ts.config.provenance.mark.corner);
    const seen: number[] = [];
    const want: number[] = [];
    for (let y = box.y; y < box.y + box.height; y++)
      for (let x = box.x; x < box.x + box.width; x++) {
        seen.push(frames.at(-1)!.luma[y * w + x]!);
        want.push(grey.data[y * w + x]!);
      }
    expect(correlation(seen, want), browser.logs.join('\n')).toBeGreaterThan(0.8);

    // The watermark, in every 1-second window of the recording.
    // A frame is stamped at the server before the viewer records it (its delay through the media path, seconds on a
    // loaded machine): a minute that turned just before t0 can still be in the first frames.
    const expected = [timeSlot(t0 - 5000), timeSlot(t0), timeSlot(t1)].map((slot) =>
      payloadHex({ id: idHash(room.roomId), slot }),
    );
    const det = new WatermarkDetector();
    const start = frames[0]!.t;
    const decoded: (string | null)[] = [];
    let win = 0;
    for (const f of frames) {
      const k = Math.floor((f.t - start) / 1000);
      if (k !== win && det.frames > 0) {
        decoded.push(det.result().payload);
        det.reset();
        win = k;
      }
      det.addLuma(f.luma, f.width, f.height);
    }
    decoded.push(det.result().payload);
    expect(decoded.length).toBeGreaterThanOrEqual(3);
    for (const p of decoded) expect(expected).toContain(p);
  }, 120_000);
});
