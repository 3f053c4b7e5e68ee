/**
 * Private mode through the real server: a live room switches from video to private mode and back without a reload
 * (the performer publishes again with the other mode). A file of its own: with several wrtc performers made and
 * closed in one process, the wrtc bindings sometimes abort the test process (Napi::Error) on this machine; kept apart
 * so that such an abort does not take the other private-mode tests with it.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { JoinResponse, Result, SdpResponse } from '../../server/types/protocol.js';
import { isPortFree } from '../helpers/net.js';
import { createTestRoom, startTestServer, type TestServer } from '../helpers/server.js';
import { call, connectClient, request, type ClientSocket } from '../helpers/socket.js';
import { waitFor } from '../helpers/wait.js';
import { trackClip, type TrackedClip } from '../helpers/trackedClip.js';
import { publishPrivate, recordFrames, sendUntil } from '../helpers/privateMode.js';
import { portraitFile } from '../../scripts/testData.js';
import { PerformerClient } from '../media/rtcClients.js';

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

// Opt-in (AVATAR_TEST_MODE_SWITCH=1) until a known abort is fixed: about half the runs on a loaded machine end the
// test process with "terminate called after throwing an instance of 'Napi::Error'" from @roamhq/wrtc after the
// private performer's peer (with its data channel) is replaced; the checks pass whenever the process survives. Open in
// issue 21's note: a crash of the server process on a mode switch, to be reproduced outside vitest.
const runSwitch = process.env.AVATAR_TEST_MODE_SWITCH === '1';

describe('private mode (expressions over a data channel)', () => {
  it.runIf(runSwitch)(
    'switches a live room from video to private and back without a reload',
    async () => {
      ts = await startTestServer({ avatar: { engine: 'default', outputSize: 320 }, fanout: { mode: 'direct' } });
      const r = await createTestRoom(ts.url, portraitFile(PORTRAIT));
      const ps = await client(ts.url);
      await call<JoinResponse>(ps, 'join', { token: r.performerToken });
      const room = ts.server.rooms.get(r.roomId)!;
      const rendered = recordFrames(room);

      const video = new PerformerClient();
      peers.push(video);
      await video.accept((await call<SdpResponse>(ps, 'publish', { sdp: await video.offer() }, 30_000)).sdp);
      video.start();
      await waitFor(() => (room.parts.ingest?.frames ?? 0) >= 10, 20_000, 'video frames decoded');
      expect(room.info.publishMode).toBe('video');

      // The client closes its old peer before publishing again, as AvatarClient does. (A wrtc peer left open after the
      // server closed its side sometimes aborted this test process in libwebrtc's bindings.)
      video.close();
      const priv = await publishPrivate(ps, peers);
      expect(room.info.publishMode).toBe('private');
      const n = rendered.faces;
      await sendUntil(priv, clip, () => rendered.faces >= n + 10, 'faces rendered from expressions');
      expect(room.parts.ingest!.frames).toBe(0);

      // A video offer in private mode is refused: private mode's promise holds on the server too.
      const sneaky = new PerformerClient();
      peers.push(sneaky);
      const bad: Result<SdpResponse> = await request(
        ps,
        'publish',
        { sdp: await sneaky.offer(), mode: 'private' },
        30_000,
      );
      expect(!bad.ok && bad.error.code).toBe('INVALID_SDP');
      priv.close();

      const back = new PerformerClient();
      peers.push(back);
      await back.accept((await call<SdpResponse>(ps, 'publish', { sdp: await back.offer() }, 30_000)).sdp);
      back.start();
      await waitFor(() => (room.parts.ingest?.frames ?? 0) >= 10, 20_000, 'video frames after switching back');
      expect(room.info.publishMode).toBe('video');
      expect(room.parts.session.restarts).toBe(0);
    },
    240_000,
  );
});
