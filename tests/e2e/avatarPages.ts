/**
 * Shared by the extension and WHEP-page end-to-end tests: a static server for the test pages on its own origin (not
 * the avatar server's, so that the WHEP routes' CORS is exercised), a room whose performer publishes with WHIP
 * (a wrtc peer: the performer's camera), and picture comparisons against the portrait.
 */
import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import sharp from 'sharp';
import { portraitFile, repoRoot } from '../helpers/media.js';
import { apiAuth, createTestRoom, type TestServer } from '../helpers/server.js';
import { PerformerClient } from '../media/rtcClients.js';

export const PORTRAIT = portraitFile('real_older_man_glasses.jpg');
/** Thumbnail side for picture comparisons. */
export const SMALL = 32;

/** Builds the client (pages, avatar-stream module, extension) with the project's build script. */
export function buildAll(): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(repoRoot, 'scripts', 'build-client.mjs')], (err, _out, stderr) =>
      err ? reject(new Error(`client build failed: ${stderr}`)) : resolve(),
    );
  });
}

export interface PageServer {
  url: string;
  close(): Promise<void>;
}

const types: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.map': 'application/json',
};

/** Serves tests/e2e/pages/*.html at / and client/dist/* at /dist/ on 127.0.0.1, port 0. */
export async function startPageServer(): Promise<PageServer> {
  const pages = path.join(repoRoot, 'tests', 'e2e', 'pages');
  const dist = path.join(repoRoot, 'client', 'dist');
  const server = http.createServer((req, res) => {
    const p = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const file = p.startsWith('/dist/') ? path.join(dist, p.slice(6)) : path.join(pages, p.slice(1));
    if (!file.startsWith(dist + path.sep) && !file.startsWith(pages + path.sep)) {
      res.writeHead(404).end();
      return;
    }
    stat(file).then(
      (s) => {
        if (!s.isFile()) throw new Error('not a file');
        res.writeHead(200, { 'content-type': types[path.extname(file)] ?? 'application/octet-stream' });
        createReadStream(file).pipe(res);
      },
      () => res.writeHead(404).end(),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };
}

export interface AvatarRoom {
  roomId: string;
  portraitId: string;
  viewerUrl: string;
  viewerToken: string;
  performerToken: string;
  /** The WHIP performer (a wrtc peer sending a moving pattern and a tone; null with `whip: false`); close it before the
   * process ends. */
  performer: PerformerClient | null;
}

/** Uploads the portrait, creates a room with it and (unless `whip: false`) starts a WHIP performer. */
export async function avatarRoom(ts: TestServer, opts: { whip?: boolean } = {}): Promise<AvatarRoom> {
  const room = await createTestRoom(ts.url, PORTRAIT);
  if (opts.whip === false) return { ...room, performer: null };
  const performer = new PerformerClient();
  try {
    const res = await fetch(`${ts.url}/whip/${room.roomId}`, {
      method: 'POST',
      headers: { 'content-type': 'application/sdp', authorization: `Bearer ${room.performerToken}` },
      body: (await performer.offer()).sdp,
    });
    if (res.status !== 201) throw new Error(`WHIP failed: ${res.status} ${await res.text()}`);
    await performer.accept({ type: 'answer', sdp: await res.text() });
    performer.start();
  } catch (err) {
    performer.close();
    throw err;
  }
  return { ...room, performer };
}

/** A PNG data URL (a frame grabbed in the page) as SMALL×SMALL grayscale samples. */
export async function grayOfPng(dataUrl: string): Promise<Uint8Array> {
  const png = Buffer.from(dataUrl.slice(dataUrl.indexOf(',') + 1), 'base64');
  return new Uint8Array(await sharp(png).resize(SMALL, SMALL, { fit: 'fill' }).grayscale().raw().toBuffer());
}

/** The portrait as the server normalised it, as SMALL×SMALL grayscale samples. */
export async function portraitGray(ts: TestServer, portraitId: string): Promise<Uint8Array> {
  const png = Buffer.from(
    await (
      await fetch(`${ts.url}/api/portraits/${portraitId}/image`, {
        headers: apiAuth(),
      })
    ).arrayBuffer(),
  );
  return new Uint8Array(await sharp(png).resize(SMALL, SMALL, { fit: 'fill' }).grayscale().raw().toBuffer());
}

/** Mean absolute luma difference of a frame (PNG data URL) and the portrait, inside `box` (pixels of the frame). */
export async function regionDiff(
  ts: TestServer,
  portraitId: string,
  dataUrl: string,
  box: { x: number; y: number; width: number; height: number },
): Promise<number> {
  const frame = sharp(Buffer.from(dataUrl.slice(dataUrl.indexOf(',') + 1), 'base64'));
  const { width, height } = await frame.metadata();
  if (!width || !height) throw new Error('regionDiff: a frame without size');
  const png = Buffer.from(
    await (await fetch(`${ts.url}/api/portraits/${portraitId}/image`, { headers: apiAuth() })).arrayBuffer(),
  );
  const a = await frame.grayscale().raw().toBuffer();
  const b = await sharp(png).resize(width, height, { fit: 'fill' }).grayscale().raw().toBuffer();
  let sum = 0;
  for (let y = box.y; y < box.y + box.height; y++) {
    for (let x = box.x; x < box.x + box.width; x++) sum += Math.abs(a[y * width + x]! - b[y * width + x]!);
  }
  return sum / (box.width * box.height);
}
