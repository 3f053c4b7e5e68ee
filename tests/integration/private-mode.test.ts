/**
 * Private mode through the real server (default engine, direct fan-out) with real wrtc peers: the performer sends its
 * voice and, per frame, only the tracked face (tracked in this process with the server's MeshTracker on a real clip,
 * encoded by the client library's ExpressionSender) over an unordered data channel. The viewer sees the avatar move;
 * no video leaves the performer; bad messages are counted by reason and dropped while the room goes on; an engine that cannot render from expressions refuses private mode.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { JoinResponse, Result, RoomInfo, SdpResponse } from '../../server/types/protocol.js';
import type { IngestPeer } from '../../server/media/ingest.js';
import { encodeExpression, type ExpressionRefusal } from '../../server/types/expressionWire.js';
import { isPortFree } from '../helpers/net.js';
import { createTestRoom, startTestServer, type TestServer } from '../helpers/server.js';
import { call, connectClient, request, type ClientSocket } from '../helpers/socket.js';
import { waitFor } from '../helpers/wait.js';
import { trackClip, type TrackedClip } from '../helpers/trackedClip.js';
import { maxMadFromFirst, publishPrivate, recordFrames, sendUntil } from '../helpers/privateMode.js';
import { portraitFile } from '../../scripts/testData.js';
import { PrivatePerformerClient, ViewerClient } from '../media/rtcClients.js';

const PORTRAIT = 'real_japanese_woman.png';
const CLIP = 'man_mouth_wide_open.mp4';
let clip: TrackedClip;
let ts: TestServer | null = null;
const sockets: ClientSocket[] = [];
const peers: { close(): void }[] = [];

beforeAll(async () => {
  clip = await trackClip(CLIP, 120);
}, 120_000);

afterEach(async () => {
  for (const p of peers.splice(0)) p.close();
  for (const s of sockets.splice(0)) s.disconnect();
  if (ts) {
    await ts.stop();
    expect(await isPortFree(ts.port)).toBe(true);
    ts = null;
  }
});

async function client(url: string): Promise<ClientSocket> {
  const s = await connectClient(url);
  sockets.push(s);
  return s;
}

describe('private mode (expressions over a data channel)', () => {
  it('renders the avatar from expressions only: it moves for the viewer, no video leaves, bad messages are dropped', async () => {
    ts = await startTestServer({ avatar: { engine: 'default', outputSize: 320 }, fanout: { mode: 'direct' } });
    const r = await createTestRoom(ts.url, portraitFile(PORTRAIT));
    const ps = await client(ts.url);
    const joined = await call<JoinResponse>(ps, 'join', { token: r.performerToken });
    expect(joined.room.privateMode).toBe(true);
    expect(joined.room.publishMode).toBeNull();
    const infos: RoomInfo[] = [];
    ps.on('room', (info) => infos.push(info));
    const room = ts.server.rooms.get(r.roomId)!;
    const refused: ExpressionRefusal[] = [];
    room.on('expressionRefused', (why: ExpressionRefusal) => refused.push(why));
    const rendered = recordFrames(room);
    const ingest = (): IngestPeer => room.parts.ingest!;

    const performer = await publishPrivate(ps, peers);
    await waitFor(() => infos.some((i) => i.publishMode === 'private'), 5000, 'RoomInfo with the private mode');

    const vs = await client(ts.url);
    await call<JoinResponse>(vs, 'join', { token: r.viewerToken });
    const viewer = new ViewerClient();
    peers.push(viewer);
    const seen: Uint8Array[] = [];
    viewer.onFrame = (f) => {
      if (seen.length < 400) seen.push(f.data.slice(0, f.width * f.height));
    };
    await viewer.accept((await call<SdpResponse>(vs, 'view', { sdp: await viewer.offer() }, 30_000)).sdp);
    await waitFor(() => viewer.frames >= 5, 30_000, 'the viewer receiving the idle portrait');

    await sendUntil(performer, clip, () => rendered.lumas.length >= 30, 'frames rendered from expressions', true);
    await waitFor(() => ingest().expressions === performer.sender.sent, 10_000, 'every message received');

    // The avatar followed the face and moved (the clip opens the mouth wide), on the server and at the viewer.
    expect(rendered.faces).toBeGreaterThan(rendered.lumas.length * 0.8);
    expect(maxMadFromFirst(rendered.lumas)).toBeGreaterThan(0.5);
    expect(maxMadFromFirst(seen)).toBeGreaterThan(0.5);
    expect(ingest().mode).toBe('private');
    expect(performer.sender.sent).toBeGreaterThanOrEqual(clip.tracks.length);

    // No video left the performer: no video sender or transceiver, no video RTP in its stats, none decoded.
    expect(performer.pc.getSenders().map((s) => s.track?.kind)).toEqual(['audio']);
    expect(performer.pc.getTransceivers().every((t) => t.receiver.track.kind !== 'video')).toBe(true);
    const out: string[] = [];
    (await performer.pc.getStats()).forEach((s: { type?: string; kind?: string }) => {
      if (s.type === 'outbound-rtp') out.push(s.kind ?? '?');
    });
    expect(out).toEqual(['audio']);
    expect(ingest().frames).toBe(0);
    // The voice still goes over WebRTC, delayed by the expression path's latency.
    await waitFor(() => viewer.audioChunks > 50 && viewer.audioPeak > 1000, 20_000, 'the performer voice');
    expect(room.parts.publisher.videoLatencyMs).toBeGreaterThan(0);

    // Bad messages: garbage, a NaN capture time, a time from the future, a text message: counted and dropped.
    const before = rendered.lumas.length;
    const accepted = ingest().expressions;
    performer.channel.send(new Uint8Array([1, 2, 3, 4, 5, 6, 7]));
    const nan = encodeExpression({
      seq: 1e6,
      captureMs: performance.timeOrigin + performance.now(),
      width: clip.width,
      height: clip.height,
      track: clip.tracks[5]!,
    }).slice();
    new DataView(nan.buffer).setFloat64(10, NaN, true);
    performer.channel.send(nan);
    performer.channel.send(
      encodeExpression({
        seq: 1e6 + 1,
        captureMs: performance.timeOrigin + performance.now() + 600_000,
        width: clip.width,
        height: clip.height,
        track: clip.tracks[5]!,
      }).slice(),
    );
    performer.channel.send('hello');
    await waitFor(() => refused.length >= 4, 10_000, 'four refusals');
    expect([...refused].sort()).toEqual(['bad-length', 'bad-length', 'future', 'not-finite']);
    expect(ingest().expressions).toBe(accepted);
    const metrics = await (await fetch(`${ts.url}/metrics`)).text();
    expect(metrics).toMatch(/avatar_expression_messages_refused_total\{reason="future"\} 1/);
    expect(metrics).toMatch(/avatar_expression_messages_refused_total\{reason="bad-length"\} 2/);
    // A flood on the channel (only the performer link's holder can open it): 2,000 valid messages and 300 malformed
    // ones at once. Each costs a decode and a copy into the latest-wins mailbox, never a render of its own.
    const burstFrom = ingest().expressions;
    const renderedFrom = rendered.lumas.length;
    const refusedFrom = refused.length;
    const t0 = performance.timeOrigin + performance.now();
    for (let i = 0; i < 2000; i++) {
      performer.channel.send(
        encodeExpression({
          seq: 2e6 + i,
          captureMs: t0 + i * 0.01,
          width: clip.width,
          height: clip.height,
          track: clip.tracks[i % clip.tracks.length]!,
        }).slice(),
      );
    }
    for (let i = 0; i < 300; i++) performer.channel.send(new Uint8Array(1 + ((i * 37) % 900)).fill(i));
    await waitFor(() => ingest().expressions - burstFrom >= 1000, 30_000, 'the burst received');
    await waitFor(() => refused.length > refusedFrom, 30_000, 'the malformed messages refused');
    await new Promise((r) => setTimeout(r, 2000));
    const delivered = ingest().expressions - burstFrom;
    expect(rendered.lumas.length - renderedFrom, `frames rendered for ${delivered} messages`).toBeLessThan(
      delivered / 4,
    );
    expect((await fetch(`${ts.url}/healthz`)).status).toBe(200);
    expect(room.parts.session.restarts).toBe(0);
    // The room goes on.
    await sendUntil(performer, clip, () => rendered.lumas.length >= before + 10, 'frames after the bad messages');
    expect(ingest().expressions).toBeGreaterThan(accepted);
    expect(room.parts.session.restarts).toBe(0);
  }, 240_000);

  it('an engine that cannot render from expressions refuses private mode with UNSUPPORTED', async () => {
    ts = await startTestServer({ avatar: { engine: 'portrait', outputSize: 320 }, fanout: { mode: 'direct' } });
    const r = await createTestRoom(ts.url, portraitFile(PORTRAIT));
    const ps = await client(ts.url);
    const joined = await call<JoinResponse>(ps, 'join', { token: r.performerToken });
    expect(joined.room.privateMode).toBe(false);
    const p = new PrivatePerformerClient();
    peers.push(p);
    // The client's sender drops (never queues) while its channel is not open.
    expect(p.sender.send(clip.tracks[0]!, clip.width, clip.height)).toBe(false);
    expect([p.sender.sent, p.sender.dropped]).toEqual([0, 1]);
    const res: Result<SdpResponse> = await request(ps, 'publish', { sdp: await p.offer(), mode: 'private' }, 30_000);
    expect(!res.ok && res.error.code).toBe('UNSUPPORTED');
  }, 60_000);
});
