/**
 * Faults: what a room of the default engine (the real model pack) loses, and how fast it comes back, when
 * (1) a viewer's network is cut and restored, (2) the performer's browser reloads its page, (3) the avatar worker
 * crashes every 20 s.
 *
 *   npm run bench -- faults [--cuts 2] [--cut-s 5] [--reloads 2] [--kills 4] [--kill-every-s 20]
 *                           [--clip woman_speech_head_motion.mp4] [--portrait real_woman_dark_hair.png]
 *
 * Real parts throughout: the server in its own process (benchmarks/lib/reliabilityServer.ts); the performer is real
 * Chromium on the studio page (performer link, Start pressed) with a fake webcam (.y4m of a shared driving clip,
 * 640×480 at 30 fps, looped); two wrtc viewers (direct fan-out): viewer A's media goes through a UDP relay in this
 * process (its ICE candidates and the server's rewritten in the offer and the answer) and its socket.io signaling
 * through a TCP proxy, viewer B connects directly (the control).
 *
 * 1. cut: the relay drops every packet both ways and the proxy stops reading both ways for --cut-s seconds (a pulled
 *    cable: ICE, DTLS, RTP and RTCP are lost, the websocket's bytes wait in the kernel), then both are restored.
 * 2. reload: the performer page is reloaded (page.reload()), Start is pressed as soon as it is enabled again, as the
 *    performer would, and the studio publishes anew (the room waits out its grace period meanwhile).
 * 3. kill: the room's avatar worker thread dies of an uncaught exception thrown inside it (injected through the
 *    inspector, no hook in the server: see reliabilityServer.ts), every --kill-every-s seconds; AvatarSession's
 *    supervisor takes a warm spare worker from the server's pool and prepares the portrait from its cache (restart
 *    budget: a token bucket of 3, one back every 10 s, so a crash every 20 s is always restarted).
 *
 * Per fault: the frame rate before it (5 s), the time to recover (from the fault, or for a cut from the restore, to
 * the first 1 s window with ≥ 80% of that rate), the longest frame gap and the frames lost (that rate × outage −
 * frames received), and the outage (the longest time without a frame from the last one before the fault to 1 s after
 * the recovery: what a fault that recovers within the first window costs), measured on the server (frames
 * synthesized from performer frames, from 100 ms ticks) and at each
 * viewer (decoded frames; the idle portrait is resent at 4 fps while nothing is synthesized, so a viewer's count
 * never reaches 0). Goal: recovery ≤ 2 s, no viewer dropped (the room's viewer count never below 2, no viewer socket
 * disconnected or closed).
 *
 * Writes benchmarks/results/faults.json.
 */
import { rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ChromiumBrowser } from '../tests/helpers/chromium.js';
import { startPerformer } from '../tests/helpers/g2g.js';
import { drivingClip, makeY4m, portraitFile } from '../tests/helpers/media.js';
import { waitFor } from '../tests/helpers/wait.js';
import { num, parseOptions, str } from './lib/args.js';
import {
  CountingViewer,
  NetCut,
  ServerProc,
  TickLog,
  benchOverrides,
  connectViewer,
  createRoom,
  now,
  recovery,
  sleep,
  uploadPortrait,
  type Connected,
  type Recovery,
} from './lib/reliability.js';
import { summarize, writeResult } from './lib/stats.js';

const GOAL_MS = 2000;

type StudioWin = { __studio: { publishState: string } };

interface FaultResult {
  kind: 'viewer-network-cut' | 'performer-reload' | 'worker-kill';
  index: number;
  /** Seconds since the first fault. */
  at_s: number;
  /** Fault length (cut) or the time the performer page took to publish again (reload), ms. */
  duration_ms?: number;
  server: Recovery;
  viewer_a: Recovery;
  viewer_b: Recovery;
  /** Where the worker was restarted: restarts counted by the session after this fault, and whether it gave up. */
  restarts?: number;
  failed?: boolean;
  relay_dropped_packets?: number;
}

/** The flags (see the header). */
export const OPTIONS = {
  cuts: num(2),
  cutS: num(5),
  reloads: num(2),
  kills: num(4),
  killEveryS: num(20),
  clip: str('woman_speech_head_motion.mp4'),
  portrait: str('real_woman_dark_hair.png'),
};

export async function main(args: string[]): Promise<void> {
  const { cuts, cutS, reloads, kills, killEveryS, clip, portrait } = parseOptions('faults', args, OPTIONS);

  const y4m = await makeY4m({ source: drivingClip(clip), width: 640, height: 480, fps: 30, seconds: 8 });
  const server = await ServerProc.start({ overrides: benchOverrides('default'), inspector: true });
  const ticks = new TickLog(server);
  let browser: ChromiumBrowser | null = null;
  const netcut = await NetCut.create(server.url);
  const viewers: Connected<CountingViewer>[] = [];
  let minViewers = Infinity;
  let measuring = false;
  const offTick = server.onTick((_at, rooms) => {
    if (measuring) for (const r of rooms) minViewers = Math.min(minViewers, r.viewers);
  });
  const results: FaultResult[] = [];
  try {
    const room = await createRoom(server, await uploadPortrait(server, portraitFile(portrait)));
    browser = await ChromiumBrowser.launch({ fakeVideo: y4m });
    const page = browser.page;
    await startPerformer(page, room.performerUrl, 60_000);
    viewers.push(await connectViewer(netcut.url, room.viewerToken, new CountingViewer(true), netcut));
    viewers.push(await connectViewer(server.url, room.viewerToken, new CountingViewer(true)));
    const [a, b] = viewers as [Connected<CountingViewer>, Connected<CountingViewer>];
    // Warm-up: the engine takes the performer's neutral, the encoders settle.
    await waitFor(() => a.peer.frames > 100 && b.peer.frames > 100, 60_000, 'viewer frames');
    await sleep(10_000);
    measuring = true;
    const t0 = now();
    const serverTimes = (): number[] => ticks.times(room.roomId);
    const measure = (faultAt: number, refAt: number): Pick<FaultResult, 'server' | 'viewer_a' | 'viewer_b'> => ({
      server: recovery(serverTimes(), faultAt, refAt),
      viewer_a: recovery(a.peer.times, faultAt, refAt),
      viewer_b: recovery(b.peer.times, faultAt, refAt),
    });
    const log = (r: FaultResult): void => {
      results.push(r);
      process.stderr.write(
        `faults: ${r.kind} #${r.index}: server ${JSON.stringify(r.server)} A ${JSON.stringify(r.viewer_a)} B ${JSON.stringify(r.viewer_b)}\n`,
      );
    };

    // 1. Viewer A's network cut and restored.
    for (let i = 0; i < cuts; i++) {
      const before = netcut.droppedPackets;
      const cutAt = now();
      netcut.cut();
      await sleep(cutS * 1000);
      const restoredAt = now();
      netcut.restore();
      await sleep(15_000);
      log({
        kind: 'viewer-network-cut',
        index: i + 1,
        at_s: Math.round((cutAt - t0) / 100) / 10,
        duration_ms: Math.round(restoredAt - cutAt),
        ...measure(cutAt, restoredAt),
        relay_dropped_packets: netcut.droppedPackets - before,
      });
    }

    // 2. The performer's page reloaded.
    for (let i = 0; i < reloads; i++) {
      const at = now();
      await page.reload();
      await waitFor(() => page.locator('#start:not([disabled])').count(), 60_000, 'start enabled after reload');
      await page.locator('#start').click();
      await waitFor(
        () => page.evaluate(() => (window as unknown as StudioWin).__studio.publishState === 'connected'),
        60_000,
        'performer connected after reload',
      );
      const publishedAt = now();
      await sleep(Math.max(0, 20_000 - (publishedAt - at)));
      log({
        kind: 'performer-reload',
        index: i + 1,
        at_s: Math.round((at - t0) / 100) / 10,
        duration_ms: Math.round(publishedAt - at),
        ...measure(at, at),
      });
    }

    // 3. The avatar worker crashes every killEveryS seconds.
    let next = now();
    const killAts: number[] = [];
    for (let i = 0; i < kills; i++) {
      await sleep(Math.max(0, next - now()));
      const { at } = await server.request<{ at: number }>({ cmd: 'killWorker', roomId: room.roomId });
      killAts.push(at);
      next = at + killEveryS * 1000;
      // Wait for the next kill (or, after the last one, as long), then measure this one.
      await sleep(Math.max(0, next - now()));
      const t = ticks.last.get(room.roomId);
      log({
        kind: 'worker-kill',
        index: i + 1,
        at_s: Math.round((at - t0) / 100) / 10,
        ...measure(at, at),
        restarts: t?.restarts ?? -1,
        failed: t?.failed ?? false,
      });
      if (t?.failed) {
        process.stderr.write('faults: the avatar session gave up (too many crashes): no more kills\n');
        break;
      }
      if (i < kills - 1 && now() > next) next = now();
    }
    measuring = false;

    // A viewer is dropped when its socket was disconnected or closed, or when the server removed its peer (the
    // room's viewer count fell below 2).
    const socketDropped = viewers.filter((v) => v.disconnects > 0 || v.closedReasons.length > 0).length;
    const dropped = Math.max(socketDropped, Number.isFinite(minViewers) ? 2 - minViewers : 0);
    const byKind = (k: FaultResult['kind']): Record<string, unknown> => {
      const rs = results.filter((r) => r.kind === k);
      const rec = (f: (r: FaultResult) => Recovery): number[] =>
        rs.map((r) => f(r).recoverMs ?? Number.POSITIVE_INFINITY);
      const affected = k === 'viewer-network-cut' ? (r: FaultResult) => r.viewer_a : (r: FaultResult) => r.server;
      const times = rec(affected);
      return {
        count: rs.length,
        recover_ms:
          k === 'viewer-network-cut'
            ? summarize(rec((r) => r.viewer_a))
            : {
                server: summarize(rec((r) => r.server)),
                viewer_a: summarize(rec((r) => r.viewer_a)),
                viewer_b: summarize(rec((r) => r.viewer_b)),
              },
        outage_ms:
          k === 'viewer-network-cut'
            ? rs.map((r) => r.viewer_a.outageMs)
            : rs.map((r) => ({
                server: r.server.outageMs,
                viewer_a: r.viewer_a.outageMs,
                viewer_b: r.viewer_b.outageMs,
              })),
        recovered_all: times.every((t) => Number.isFinite(t)),
        max_recover_ms: Math.max(...times),
        goal_met: times.every((t) => t <= GOAL_MS),
        frames_lost:
          k === 'viewer-network-cut'
            ? rs.map((r) => r.viewer_a.framesLost)
            : rs.map((r) => ({
                server: r.server.framesLost,
                viewer_a: r.viewer_a.framesLost,
                viewer_b: r.viewer_b.framesLost,
              })),
      };
    };
    writeResult('faults', {
      machine: '2-core shared VM, no GPU; server in its own process',
      load_average_at_end: os.loadavg().map((v) => Math.round(v * 100) / 100),
      engine: 'default',
      performer: `Chromium studio page, fake webcam ${clip} 640x480 30 fps`,
      portrait,
      viewers: 'A: media via a UDP relay + signaling via a TCP proxy (cut); B: direct (control)',
      goal_recover_ms: GOAL_MS,
      recovery_rule:
        'from the fault (a cut: from the restore) to the first 1 s window with >= 80% of the 5 s pre-fault frame rate',
      summary: {
        'viewer-network-cut': { cut_s: cutS, ...byKind('viewer-network-cut') },
        'performer-reload': byKind('performer-reload'),
        'worker-kill': {
          every_s: killEveryS,
          supervisor:
            'warm spare from the pool + portrait cache; restart budget: token bucket of 3, one back every 10 s',
          ...byKind('worker-kill'),
        },
      },
      viewers_dropped: dropped,
      min_viewers_in_room: Number.isFinite(minViewers) ? minViewers : null,
      viewer_disconnects: viewers.map((v) => v.disconnects),
      viewer_closed_reasons: viewers.map((v) => v.closedReasons),
      server_faults: server.faults,
      server_alive: server.alive,
      faults: results,
    });
  } finally {
    offTick();
    ticks.close();
    for (const v of viewers) v.close();
    netcut.close();
    await browser?.close();
    await server.close();
    await rm(path.dirname(y4m), { recursive: true, force: true });
  }
}
