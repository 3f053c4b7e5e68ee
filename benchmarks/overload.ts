/**
 * Overload: more performers than the machine can serve at full rate. 4 rooms of the default engine (the real model
 * pack), each with a performer sending 30 fps and a viewer, on this 2-core VM; the server in its own process.
 *
 *   npm run bench -- overload [--rooms 4] [--seconds 60] [--baseline-s 20] [--warmup-s 15]
 *                             [--clip woman_speech_head_motion.mp4] [--portrait real_woman_dark_hair.png]
 *
 * First one room alone (--baseline-s: what a room gets without contention), then all --rooms at once. Performers are
 * wrtc peers sending a shared driving clip (640×480, looped) at 30 fps with a tone; viewers are wrtc peers (direct
 * fan-out) counting decoded frames. While the load runs, every 250 ms: a REST call (GET /api/portraits with the API
 * key, the management API's list) and a signaling round trip (room 1's performer socket sends setSettings with the
 * current expressionStrength: validated, applied by the room, acked), each timed from send to answer.
 *
 * Per room: synthesized fps (server ticks), viewer fps, dropped driving frames per second, the server's latency
 * (RoomStats.latencyMs: ingest → published, p50 of each second, as pushed to the performer) and its trend (ms per
 * minute: a queue would grow it without bound; the mailbox is latest-frame-wins, so it must stay flat). Plus the
 * server's and the machine's CPU.
 *
 * Writes benchmarks/results/overload.json.
 */
import os from 'node:os';
import { num, parseOptions, str } from './lib/args.js';
import { cpuPercent, machineCpu, sampleProc } from './lib/fanoutProc.js';
import {
  ClipPerformer,
  CountingViewer,
  ServerProc,
  TickLog,
  benchOverrides,
  connectPerformer,
  connectViewer,
  createRoom,
  loadClipFrames,
  now,
  round,
  sleep,
  slope,
  uploadPortrait,
  type Connected,
  type RoomLinks,
} from './lib/reliability.js';
import { summarize, writeResult, type Summary } from './lib/stats.js';
import { drivingClip, portraitFile } from '../tests/helpers/media.js';
import { request } from '../tests/helpers/socket.js';

interface RoomRun {
  links: RoomLinks;
  performer: Connected<ClipPerformer>;
  viewer: Connected<CountingViewer>;
}

interface Probes {
  rest: number[];
  restErrors: number;
  signaling: number[];
  signalingErrors: number;
}

/** REST and signaling round trips every `everyMs` until `until` (epoch ms). */
async function probe(
  server: ServerProc,
  performer: Connected<ClipPerformer>,
  until: number,
  everyMs: number,
): Promise<Probes> {
  const p: Probes = { rest: [], restErrors: 0, signaling: [], signalingErrors: 0 };
  const rest = (async () => {
    while (now() < until) {
      const t = performance.now();
      try {
        const res = await fetch(`${server.url}/api/portraits`, { headers: server.headers });
        await res.arrayBuffer();
        if (res.status === 200) p.rest.push(performance.now() - t);
        else p.restErrors++;
      } catch {
        p.restErrors++;
      }
      await sleep(Math.max(0, everyMs - (performance.now() - t)));
    }
  })();
  const sig = (async () => {
    while (now() < until) {
      const t = performance.now();
      try {
        const r = await request(performer.socket, 'setSettings', { settings: { expressionStrength: 1 } }, 10_000);
        if (r.ok) p.signaling.push(performance.now() - t);
        else p.signalingErrors++;
      } catch {
        p.signalingErrors++;
      }
      await sleep(Math.max(0, everyMs - (performance.now() - t)));
    }
  })();
  await Promise.all([rest, sig]);
  return p;
}

interface RoomFigures {
  roomId: string;
  server_fps: number;
  viewer_fps: number;
  dropped_per_s: number;
  latency_ms: Summary;
  latency_trend_ms_per_min: number;
  engine_ms: Summary;
  viewers_in_room_min: number;
}

function figures(r: RoomRun, ticks: TickLog, from: number, to: number, dropped0: number): RoomFigures {
  const s = (to - from) / 1000;
  const serverFrames = ticks.times(r.links.roomId).filter((t) => t >= from && t < to).length;
  let viewerFrames = 0;
  for (let sec = Math.ceil(from / 1000); sec < Math.floor(to / 1000); sec++)
    viewerFrames += r.viewer.peer.bins.get(sec) ?? 0;
  const secs = Math.floor(to / 1000) - Math.ceil(from / 1000);
  // RoomStats arrive once a second, stamped on arrival.
  const stats = r.performer.stats.filter((x) => x.at >= from && x.at < to);
  const lat = stats.map((x) => x.latencyMs);
  const tMin = stats.map((x) => (x.at - from) / 60_000);
  const t = ticks.last.get(r.links.roomId);
  return {
    roomId: r.links.roomId,
    server_fps: round(serverFrames / s, 1),
    viewer_fps: round(viewerFrames / Math.max(1, secs), 1),
    dropped_per_s: round(((t?.dropped ?? 0) - dropped0) / s, 1),
    latency_ms: summarize(lat),
    latency_trend_ms_per_min: round(slope(tMin, lat), 2),
    engine_ms: summarize(stats.map((x) => x.engineMs)),
    viewers_in_room_min: t?.viewers ?? 0,
  };
}

/** The flags (see the header). */
export const OPTIONS = {
  rooms: num(4),
  seconds: num(60),
  baselineS: num(20),
  warmupS: num(15),
  clip: str('woman_speech_head_motion.mp4'),
  portrait: str('real_woman_dark_hair.png'),
};

export async function main(args: string[]): Promise<void> {
  const { rooms: roomCount, seconds, baselineS, warmupS, clip, portrait } = parseOptions('overload', args, OPTIONS);

  const frames = await loadClipFrames(drivingClip(clip), 640, 480, 6);
  const server = await ServerProc.start({ overrides: benchOverrides('default'), inspector: false });
  const ticks = new TickLog(server);
  const runs: RoomRun[] = [];
  try {
    const portraitId = await uploadPortrait(server, portraitFile(portrait));
    const open = async (): Promise<RoomRun> => {
      const links = await createRoom(server, portraitId);
      const performer = await connectPerformer(
        server.url,
        links.performerToken,
        new ClipPerformer(frames, 640, 480, 30),
      );
      const viewer = await connectViewer(server.url, links.viewerToken, new CountingViewer());
      const run = { links, performer, viewer };
      runs.push(run);
      return run;
    };

    // One room alone.
    const first = await open();
    await sleep(warmupS * 1000);
    const b0 = now();
    const bDropped = ticks.last.get(first.links.roomId)?.dropped ?? 0;
    const baselineProbes = await probe(server, first.performer, b0 + baselineS * 1000, 250);
    const baseline = figures(first, ticks, b0, now(), bDropped);
    process.stderr.write(`overload: baseline (1 room): ${JSON.stringify(baseline)}\n`);

    // All rooms.
    for (let i = 1; i < roomCount; i++) await open();
    await sleep(warmupS * 1000);
    const t0 = now();
    const dropped0 = runs.map((r) => ticks.last.get(r.links.roomId)?.dropped ?? 0);
    const proc0 = sampleProc(server.pid);
    const m0 = machineCpu();
    const probes = await probe(server, first.performer, t0 + seconds * 1000, 250);
    const t1 = now();
    const proc1 = sampleProc(server.pid);
    const m1 = machineCpu();
    const rooms = runs.map((r, i) => figures(r, ticks, t0, t1, dropped0[i]!));
    const restAlone = summarize(baselineProbes.rest);
    const sigAlone = summarize(baselineProbes.signaling);
    writeResult('overload', {
      machine: '2-core shared VM, no GPU; server in its own process',
      load_average_at_end: os.loadavg().map((v) => Math.round(v * 100) / 100),
      engine: 'default',
      performers: `${roomCount} wrtc performers, ${clip} 640x480 looped at 30 fps + tone, one wrtc viewer per room (direct fan-out)`,
      portrait,
      seconds,
      baseline_one_room: { ...baseline, rest_ms: restAlone, signaling_ms: sigAlone },
      rooms,
      total_server_fps: round(
        rooms.reduce((a, r) => a + r.server_fps, 0),
        1,
      ),
      every_room_degrades_not_stops: rooms.every((r) => r.server_fps > 0 && r.viewer_fps > 0),
      queue_growth: {
        rule: 'latency trend (ms per minute, least squares over the per-second p50s) and its p95 against the one-room run: a queue would grow without bound',
        max_latency_trend_ms_per_min: Math.max(...rooms.map((r) => r.latency_trend_ms_per_min)),
        max_latency_p95_ms: Math.max(...rooms.map((r) => r.latency_ms.p95)),
      },
      rest_ms: { ...summarize(probes.rest), errors: probes.restErrors, call: 'GET /api/portraits (API key)' },
      signaling_ms: {
        ...summarize(probes.signaling),
        errors: probes.signalingErrors,
        call: 'setSettings round trip (performer socket of room 1)',
      },
      server_cpu_pct_of_one_core: proc0 && proc1 ? round(cpuPercent(proc0, proc1), 1) : null,
      machine_cpu_pct: round(((m1.busyS - m0.busyS) / Math.max(1e-9, m1.totalS - m0.totalS)) * 100, 1),
      server_rss_mb: proc1 ? round(proc1.rssMb, 1) : null,
      server_faults: server.faults,
    });
  } finally {
    ticks.close();
    for (const r of runs) {
      r.performer.close();
      r.viewer.close();
    }
    await server.close();
  }
}
