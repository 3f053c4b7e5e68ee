/**
 * POST /api/verify is public, so it must stay cheap (issue 20, item 2), against a real server on port 0:
 *  - a 12000x12000 PNG (a flat colour: ~0.5 MB on the wire, 432 MB decoded) is refused from its header, 413
 *    IMAGE_TOO_LARGE, before decoding: the process's RSS does not jump; a normal image still verifies;
 *  - a body over verify.maxBytes (16 MiB) is refused, 413 PAYLOAD_TOO_LARGE;
 *  - ffmpeg opens only the uploaded file, in an allowed container: a Y4M clip is refused, a playlist not followed;
 *  - one address gets verify.perAddressPerMinute requests, then 429 TOO_MANY_REQUESTS with Retry-After.
 */
import { spawn } from 'node:child_process';
import sharp from 'sharp';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { VerifyReport } from '../../server/provenance/verify.js';
import { drivingClip } from '../helpers/media.js';
import { isPortFree } from '../helpers/net.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/** Runs ffmpeg writing to stdout; resolves with what it wrote. */
function ffmpegOut(args: string[]): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const p = spawn('ffmpeg', ['-v', 'error', '-nostdin', ...args, 'pipe:1'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const chunks: Buffer[] = [];
    p.stdout.on('data', (d: Buffer) => chunks.push(d));
    p.on('error', reject);
    p.on('close', (code) =>
      code === 0 ? resolve(new Uint8Array(Buffer.concat(chunks))) : reject(new Error(`ffmpeg exited ${code}`)),
    );
  });
}

const flat = (width: number, height: number): Promise<Buffer> =>
  sharp({ create: { width, height, channels: 3, background: { r: 40, g: 80, b: 120 } } })
    .png()
    .toBuffer();

async function post(ts: TestServer, body: Uint8Array | string, type = 'image/png'): Promise<Response> {
  const b = typeof body === 'string' ? body : new Blob([new Uint8Array(body)]);
  return fetch(`${ts.url}/api/verify`, { method: 'POST', headers: { 'content-type': type }, body: b });
}

describe('POST /api/verify limits', () => {
  let ts: TestServer;
  beforeEach(async () => {
    ts = await startTestServer();
  });
  afterEach(async () => {
    await ts.stop();
    expect(await isPortFree(ts.port)).toBe(true);
  });

  it('refuses a 12000x12000 PNG from its header (413 IMAGE_TOO_LARGE) without decoding it; a normal image verifies', async () => {
    const bomb = await flat(12_000, 12_000);
    expect(bomb.length).toBeLessThan(2 * 1024 * 1024);
    const before = process.memoryUsage().rss;
    const r = await post(ts, new Uint8Array(bomb));
    const grown = process.memoryUsage().rss - before;
    expect(r.status).toBe(413);
    expect(await r.json()).toMatchObject({ code: 'IMAGE_TOO_LARGE' });
    // Decoded it would be 432 MB of RGB (the issue saw +570 MB); refused from the header, the server barely moves.
    expect(grown).toBeLessThan(100 * 1024 * 1024);

    const ok = await post(ts, new Uint8Array(await flat(640, 480)));
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as VerifyReport).watermark).toMatchObject({ present: false, windows: 1 });
  }, 120_000);

  it('refuses a body over 16 MiB with 413 PAYLOAD_TOO_LARGE', async () => {
    const r = await post(ts, new Uint8Array(16 * 1024 * 1024 + 1), 'application/octet-stream');
    expect(r.status).toBe(413);
    expect(await r.json()).toMatchObject({ code: 'PAYLOAD_TOO_LARGE' });
    expect(ts.config.verify.maxBytes).toBe(16 * 1024 * 1024);
  }, 60_000);

  it('ffmpeg opens only allowed containers (415 for a Y4M clip), and never a playlist naming a local file', async () => {
    // A decodable clip in a container outside VERIFY_VIDEO_FORMATS (yuv4mpegpipe): refused, not decoded.
    const y4m = await ffmpegOut([
      '-f',
      'lavfi',
      '-i',
      'testsrc=size=64x64:rate=5:duration=1',
      '-pix_fmt',
      'yuv420p',
      '-f',
      'yuv4mpegpipe',
    ]);
    const r1 = await post(ts, y4m, 'application/octet-stream');
    expect(r1.status).toBe(415);
    expect(await r1.json()).toMatchObject({ code: 'UNSUPPORTED_MEDIA_TYPE' });
    // An HLS playlist naming a clip on the server's disk (ffmpeg's own hls probe refused this before, too).
    const playlist = `#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n${drivingClip('man_mouth_wide_open.mp4')}\n#EXT-X-ENDLIST\n`;
    const r2 = await post(ts, playlist, 'application/vnd.apple.mpegurl');
    expect(r2.status).toBe(415);
    expect(await r2.json()).toMatchObject({ code: 'UNSUPPORTED_MEDIA_TYPE' });
  }, 60_000);

  it('answers 429 TOO_MANY_REQUESTS with Retry-After once one address used its burst', async () => {
    // The default burst (verify.perAddressPerMinute), checked against the config at the end.
    const burst = 10;
    const img = new Uint8Array(await flat(64, 64));
    let refusedAt = -1;
    let refused: Response | null = null;
    for (let i = 0; i < burst + 5 && !refused; i++) {
      const r = await post(ts, img);
      if (r.status === 429) {
        refusedAt = i;
        refused = r;
      } else {
        expect(r.status).toBe(200);
        await r.arrayBuffer();
      }
    }
    expect(refused?.status).toBe(429);
    expect(refusedAt).toBe(burst);
    expect(Number(refused!.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(await refused!.json()).toMatchObject({ code: 'TOO_MANY_REQUESTS' });
    expect(ts.config.verify.perAddressPerMinute).toBe(burst);
  }, 60_000);
});
