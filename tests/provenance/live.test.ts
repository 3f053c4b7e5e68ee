/**
 * Provenance on the live path, end to end through real WebRTC: a real server (port 0) with the 'portrait' engine, a
 * wrtc performer publishing, a wrtc viewer receiving the synthesized stream. The frames the viewer decodes carry the
 * visible mark in the operator's corner (matched against the mark's own picture) and the watermark, whose payload
 * names the room (32-bit hash of its id) and the current minute. With the mark and watermark turned off by the
 * operator, neither is there.
 */
import { readFile } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { portraitFile } from '../../scripts/testData.js';
import type { DeepPartial, Config } from '../../server/config.js';
import { markBox, VisibleMark } from '../../server/provenance/mark.js';
import { idHash, payloadHex, timeSlot } from '../../server/provenance/payload.js';
import { WatermarkDetector } from '../../server/provenance/watermark.js';
import type { SdpResponse } from '../../server/types/protocol.js';
import { isPortFree } from '../helpers/net.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { call, connectClient, type ClientSocket } from '../helpers/socket.js';
import { waitFor } from '../helpers/wait.js';
import { correlation } from '../helpers/media.js';
import { PerformerClient, ViewerClient } from '../media/rtcClients.js';

let ts: TestServer | null = null;
const sockets: ClientSocket[] = [];
const peers: { close(): void }[] = [];

afterEach(async () => {
  for (const p of peers.splice(0)) p.close();
  for (const s of sockets.splice(0)) s.disconnect();
  if (ts) {
    await ts.stop();
    expect(await isPortFree(ts.port)).toBe(true);
    ts = null;
  }
});

/** The management calls' bearer header: the first configured API key, else the local operator's key. */
export function operatorAuth(t: TestServer): Record<string, string> {
  const key = t.config.auth.apiKeys[0]?.secret ?? t.server.operatorKey;
  return key ? { authorization: `Bearer ${key}` } : {};
}

/** Starts a server, a room, a performer and a viewer; returns the room id and the viewer's first `n` frames (luma). */
async function viewFrames(
  overrides: DeepPartial<Config>,
  n: number,
): Promise<{ roomId: string; frames: { w: number; h: number; y: Uint8Array }[] }> {
  ts = await startTestServer({ avatar: { engine: 'portrait' }, fanout: { mode: 'direct' }, ...overrides });
  const auth = operatorAuth(ts);
  const form = new FormData();
  form.append('consent', 'true');
  form.append('file', new Blob([new Uint8Array(await readFile(portraitFile('real_asian_young_woman.jpg')))]), 'w.jpg');
  const up = await fetch(`${ts.url}/api/portraits`, { method: 'POST', body: form, headers: auth });
  expect(up.status).toBe(201);
  const portrait = (await up.json()) as { id: string };
  const rr = await fetch(`${ts.url}/api/rooms`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...auth },
    body: JSON.stringify({ portraitId: portrait.id }),
  });
  expect(rr.status).toBe(201);
  const room = (await rr.json()) as { roomId: string; performerToken: string; viewerToken: string };

  const ps = await connectClient(ts.url);
  sockets.push(ps);
  await call(ps, 'join', { token: room.performerToken });
  const performer = new PerformerClient();
  peers.push(performer);
  await performer.accept((await call<SdpResponse>(ps, 'publish', { sdp: await performer.offer() }, 30_000)).sdp);
  performer.start();

  const vs = await connectClient(ts.url);
  sockets.push(vs);
  await call(vs, 'join', { token: room.viewerToken });
  const viewer = new ViewerClient();
  peers.push(viewer);
  const frames: { w: number; h: number; y: Uint8Array }[] = [];
  viewer.onFrame = (f) => {
    // Skip the first frames (the encoder's ramp-up at its lowest bitrate), keep the next n.
    if (viewer.frames > 10 && frames.length < n)
      frames.push({ w: f.width, h: f.height, y: f.data.slice(0, f.width * f.height) });
  };
  await viewer.accept((await call<SdpResponse>(vs, 'view', { sdp: await viewer.offer() }, 30_000)).sdp);
  await waitFor(() => frames.length >= n, 60_000, `${n} viewer frames`);
  return { roomId: room.roomId, frames };
}

/** Correlation of the received luma inside the mark's box with the mark drawn on a flat grey frame. */
function markCorrelation(f: { w: number; h: number; y: Uint8Array }, corner: 'top-left' | 'bottom-right'): number {
  const grey = { width: f.w, height: f.h, data: new Uint8Array(f.w * f.h * 1.5).fill(128) };
  new VisibleMark({ corner, opacity: 1 }).apply(grey);
  const box = markBox(f.w, f.h, corner);
  const a: number[] = [];
  const b: number[] = [];
  for (let y = box.y; y < box.y + box.height; y++)
    for (let x = box.x; x < box.x + box.width; x++) {
      a.push(f.y[y * f.w + x]!);
      b.push(grey.data[y * f.w + x]!);
    }
  return correlation(a, b);
}

describe('provenance on the live stream', () => {
  it('the viewer receives the mark in the configured corner and a watermark naming the room and the minute', async () => {
    const { roomId, frames } = await viewFrames({ provenance: { mark: { corner: 'top-left', opacity: 1 } } }, 30);
    const last = frames.at(-1)!;
    expect(markCorrelation(last, 'top-left')).toBeGreaterThan(0.8);
    expect(markCorrelation(last, 'bottom-right')).toBeLessThan(0.5);
    const det = new WatermarkDetector();
    for (const f of frames) det.addLuma(f.y, f.w, f.h);
    const r = det.result();
    expect(r.present).toBe(true);
    const now = Date.now();
    const expected = [timeSlot(now), timeSlot(now - 60_000)].map((slot) => payloadHex({ id: idHash(roomId), slot }));
    expect(expected).toContain(r.payload);
  }, 120_000);

  it('the operator can turn both off', async () => {
    const { frames } = await viewFrames(
      { provenance: { mark: { enabled: false }, watermark: { enabled: false } } },
      30,
    );
    expect(markCorrelation(frames.at(-1)!, 'bottom-right')).toBeLessThan(0.5);
    const det = new WatermarkDetector();
    for (const f of frames) det.addLuma(f.y, f.w, f.h);
    expect(det.result().present).toBe(false);
  }, 120_000);
});
