/**
 * TURN through a real coturn (Debian's `turnserver`, started on loopback with a random static-auth-secret): a real
 * server on port 0 configured with it hands time-limited credentials in its join answer (never the secret), a viewer
 * whose peer may only use relay candidates (iceTransportPolicy 'relay') gets decoded frames through the relay, and the
 * pair its ICE agent chose is a relay one (over socket.io signaling and over WHEP, whose Link header carries the
 * credentials); a viewer with a wrong or an expired credential gets 401 from coturn,
 * gathers nothing and never connects while the good viewer keeps receiving.
 */
import { createHmac } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { IceServer, JoinResponse, SdpResponse } from '../../server/types/protocol.js';
import { turnCredentials } from '../../server/media/iceConfig.js';
import { startCoturn, type TestCoturn } from '../helpers/coturn.js';
import { isPortFree } from '../helpers/net.js';
import { createTestRoom, startTestServer, type TestServer } from '../helpers/server.js';
import { call, connectClient, type ClientSocket } from '../helpers/socket.js';
import { waitFor } from '../helpers/wait.js';
import { PerformerClient, ViewerClient } from '../media/rtcClients.js';
import { portraitPath } from '../media/helpers.js';

const PORTRAIT = 'real_japanese_woman.png';
/** Gathering through coturn: generous, for loaded CI machines (an offer waits for gathering to complete). */
const GATHER_MS = 30_000;
let coturn: TestCoturn | null = null;
let ts: TestServer | null = null;
const sockets: ClientSocket[] = [];
const peers: { close(): void }[] = [];

beforeEach(async () => {
  coturn = await startCoturn();
  ts = await startTestServer({
    avatar: { engine: 'portrait', outputSize: 320 },
    fanout: { mode: 'direct' },
    media: { turn: { urls: [coturn.url], secret: coturn.secret, ttlMs: 3600_000 } },
  });
});
afterEach(async () => {
  for (const p of peers.splice(0)) p.close();
  for (const s of sockets.splice(0)) s.disconnect();
  await ts?.stop();
  if (ts) expect(await isPortFree(ts.port)).toBe(true);
  await coturn?.stop();
  ts = null;
  coturn = null;
});

async function client(): Promise<ClientSocket> {
  const s = await connectClient(ts!.url);
  sockets.push(s);
  return s;
}

/** The candidate lines (`a=candidate:...`) of an SDP. */
const candidates = (sdp: string): string[] => sdp.split(/\r?\n/).filter((l) => l.startsWith('a=candidate:'));

/** The local and remote candidate types of the candidate pair the peer's ICE agent selected (nominated, succeeded). */
async function selectedPair(pc: RTCPeerConnection): Promise<{ local: string; remote: string } | null> {
  type Stat = Record<string, unknown>;
  const stats = await pc.getStats();
  const byId = new Map<string, Stat>();
  stats.forEach((s: Stat) => byId.set(s.id as string, s));
  const all = [...byId.values()];
  const transport = all.find((s) => s.type === 'transport' && typeof s.selectedCandidatePairId === 'string');
  const pair =
    (transport && byId.get(transport.selectedCandidatePairId as string)) ??
    all.find((s) => s.type === 'candidate-pair' && s.nominated === true && s.state === 'succeeded');
  if (!pair) return null;
  const local = byId.get(pair.localCandidateId as string);
  const remote = byId.get(pair.remoteCandidateId as string);
  return typeof local?.candidateType === 'string' && typeof remote?.candidateType === 'string'
    ? { local: local.candidateType, remote: remote.candidateType }
    : null;
}

/** A relay-only viewer peer whose ICE errors (coturn's answers to its allocations) are kept. */
function relayViewer(iceServers: IceServer[]): { viewer: ViewerClient; errors: { code: number; url: string }[] } {
  const viewer = new ViewerClient({ iceServers, iceTransportPolicy: 'relay' });
  peers.push(viewer);
  const errors: { code: number; url: string }[] = [];
  viewer.pc.addEventListener('icecandidateerror', (e: Event) => {
    const ev = e as RTCPeerConnectionIceErrorEvent;
    errors.push({ code: ev.errorCode, url: ev.url });
  });
  return { viewer, errors };
}

describe('TURN relay through a real coturn', () => {
  it('a relay-only viewer gets frames through coturn; wrong or expired credentials get 401 and no connection', async () => {
    const { url: turnUrl, secret } = coturn!;
    const room = await createTestRoom(ts!.url, portraitPath(PORTRAIT));

    // The performer publishes over host candidates (no TURN).
    const ps = await client();
    const pj = await call<JoinResponse>(ps, 'join', { token: room.performerToken });
    const performer = new PerformerClient();
    peers.push(performer);
    await performer.accept((await call<SdpResponse>(ps, 'publish', { sdp: await performer.offer() }, 30_000)).sdp);
    performer.start();
    const { width } = pj.room;

    // The viewer's join answer carries the TURN URL with time-limited credentials in coturn's REST scheme.
    const vs = await client();
    const joined = await call<JoinResponse>(vs, 'join', { token: room.viewerToken });
    expect(JSON.stringify(joined)).not.toContain(secret);
    const turn = joined.iceServers.find((s) => [s.urls].flat().includes(turnUrl));
    expect(turn, `join answer's iceServers: ${JSON.stringify(joined.iceServers)}`).toBeDefined();
    const m = /^(\d+):(viewer\.[A-Za-z0-9_.@-]+)$/.exec(turn!.username ?? '');
    expect(m, `TURN username "${turn!.username}"`).not.toBeNull();
    const expiresAt = Number(m![1]);
    expect(expiresAt).toBeGreaterThan(Date.now() / 1000 + 3000);
    expect(expiresAt).toBeLessThanOrEqual(Date.now() / 1000 + 3600);
    expect(turn!.credential).toBe(createHmac('sha1', secret).update(turn!.username!).digest('base64'));

    // A viewer that may only use relay candidates: its offer holds relay candidates only (allocated by coturn).
    const good = relayViewer(joined.iceServers);
    const offer = await good.viewer.offer(GATHER_MS);
    expect(good.viewer.pc.iceGatheringState).toBe('complete');
    const offered = candidates(offer.sdp);
    expect(offered.length, `viewer offer candidates; coturn log:\n${coturn!.log().slice(-2000)}`).toBeGreaterThan(0);
    for (const c of offered) expect(c).toMatch(/ typ relay /);
    const answer = (await call<SdpResponse>(vs, 'view', { sdp: offer }, 30_000)).sdp;
    // The server's own peer gathered through coturn too (media.serverPeersUseIce, default on).
    expect(
      candidates(answer.sdp).some((c) => / typ relay /.test(c)),
      answer.sdp,
    ).toBe(true);
    await good.viewer.accept(answer);
    await waitFor(
      () => good.viewer.frames >= 20 && good.viewer.last?.width === width,
      60_000,
      'frames at the portrait size through the TURN relay',
    );
    const pair = await waitFor(() => selectedPair(good.viewer.pc), 20_000, 'a selected candidate pair');
    expect(pair.local).toBe('relay');

    // A wrong credential and an expired one (signed with the right secret): coturn answers 401, nothing is gathered.
    const wrong: IceServer[] = [{ urls: turnUrl, username: turn!.username!, credential: 'not-the-credential' }];
    const expired: IceServer[] = [
      { urls: turnUrl, ...turnCredentials(secret, 'viewer.expired', Math.floor(Date.now() / 1000) - 60) },
    ];
    const refused: ViewerClient[] = [];
    for (const iceServers of [wrong, expired]) {
      const s = await client();
      await call<JoinResponse>(s, 'join', { token: room.viewerToken });
      const bad = relayViewer(iceServers);
      const badOffer = await bad.viewer.offer(GATHER_MS);
      expect(bad.viewer.pc.iceGatheringState).toBe('complete');
      expect(candidates(badOffer.sdp)).toEqual([]);
      await waitFor(
        () => bad.errors.some((e) => e.code === 401 && e.url === turnUrl),
        10_000,
        `coturn's 401 for ${iceServers[0]!.username} (ICE errors seen: ${JSON.stringify(bad.errors)})`,
      );
      await bad.viewer.accept((await call<SdpResponse>(s, 'view', { sdp: badOffer }, 30_000)).sdp);
      refused.push(bad.viewer);
    }
    // While the good viewer receives 30 more frames, the refused ones connect to nothing and receive nothing.
    const before = good.viewer.frames;
    await waitFor(() => good.viewer.frames >= before + 30, 30_000, 'the relayed stream going on');
    for (const v of refused) {
      expect(v.frames).toBe(0);
      expect(v.pc.connectionState).not.toBe('connected');
      expect(await selectedPair(v.pc)).toBeNull();
    }

    // WHEP: the answer's Link header (RFC 9725) carries the TURN URL with fresh credentials for this session, never
    // the secret; a relay-only WHEP viewer gets frames through coturn as well.
    const whep = relayViewer(joined.iceServers);
    const res = await fetch(`${ts!.url}/whep/${room.roomId}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${room.viewerToken}`, 'content-type': 'application/sdp' },
      body: (await whep.viewer.offer(GATHER_MS)).sdp,
    });
    expect(res.status).toBe(201);
    const link = res.headers.get('link') ?? '';
    expect(link).not.toContain(secret);
    const lm = /<([^>]+)>; rel="ice-server"; username="(\d+:whep\.[^"]+)"; credential="([^"]+)"/.exec(link);
    expect(lm, `Link: ${link}`).not.toBeNull();
    expect(lm![1]).toBe(turnUrl);
    expect(lm![3]).toBe(createHmac('sha1', secret).update(lm![2]!).digest('base64'));
    await whep.viewer.accept({ type: 'answer', sdp: await res.text() });
    await waitFor(() => whep.viewer.frames >= 10, 60_000, 'WHEP frames through the TURN relay');
    expect((await waitFor(() => selectedPair(whep.viewer.pc), 20_000, 'the WHEP pair'))?.local).toBe('relay');
  });
});
