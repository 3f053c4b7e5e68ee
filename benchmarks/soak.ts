/**
 * Soak: one performer and 4 viewers on one room of the default engine (the real model pack) for --minutes, the
 * server in its own process (benchmarks/lib/reliabilityServer.ts) so that its memory is its own.
 *
 *   npm run bench -- soak -- --minutes 30 [--viewers 4] [--warmup-minutes 3] [--clip woman_speech_head_motion.mp4]
 *                            [--portrait real_woman_dark_hair.png] [--sample-s 5]
 *
 * The performer is a wrtc peer sending a shared driving clip (640×480, looped) at 30 fps with a tone; the viewers
 * are wrtc peers (direct fan-out) that count the frames they decode. Every --sample-s seconds the server's
 * process.memoryUsage() is read (no GC forced), every minute once more after a full GC (the child runs with
 * --expose-gc), plus the process's RSS and CPU from /proc.
 *
 * Memory: least-squares slopes after the warm-up, in MB per 10 minutes, of RSS and heapUsed (raw samples) and of
 * heapUsed after GC; "flat" means RSS under 5 MB / 10 min and post-GC heap under 1 MB / 10 min (and the last third's
 * mean RSS within 5% of the warm-up end's). Frames: per minute, the server's synthesized fps and dropped driving
 * frames, and per viewer the decoded fps and libwebrtc's framesDropped / packetsLost / freezeCount deltas.
 *
 * Writes benchmarks/results/soak.json.
 */
import { num, parseOptions, str } from './lib/args.js';
import { sampleProc } from './lib/fanoutProc.js';
import {
  ClipPerformer,
  CountingViewer,
  ServerProc,
  TickLog,
  benchOverrides,
  connectPerformer,
  connectViewer,
  createRoom,
  inboundVideo,
  loadClipFrames,
  now,
  round,
  sleep,
  slope,
  uploadPortrait,
  type Connected,
  type InboundVideo,
} from './lib/reliability.js';
import type { MemoryUsage } from './lib/reliabilityProtocol.js';
import { summarize, writeResult } from './lib/stats.js';
import { drivingClip, portraitFile } from '../tests/helpers/media.js';

const MB = 1024 * 1024;
/** The flatness limits (MB per 10 minutes). */
const FLAT_RSS = 5;
const FLAT_HEAP_GC = 1;

interface MemSample {
  tMin: number;
  rssMb: number;
  heapUsedMb: number;
  externalMb: number;
  arrayBuffersMb: number;
}

function memSample(t0: number, m: MemoryUsage): MemSample {
  return {
    tMin: round((now() - t0) / 60_000, 3),
    rssMb: round(m.rss / MB, 2),
    heapUsedMb: round(m.heapUsed / MB, 2),
    externalMb: round(m.external / MB, 2),
    arrayBuffersMb: round(m.arrayBuffers / MB, 2),
  };
}

/** Slope in MB per 10 minutes of `key` over samples after the warm-up. */
function per10(samples: MemSample[], key: keyof MemSample, warmupMin: number): number {
  const s = samples.filter((x) => x.tMin >= warmupMin);
  return round(
    slope(
      s.map((x) => x.tMin / 10),
      s.map((x) => x[key]),
    ),
    3,
  );
}

/** The flags (see the header). */
export const OPTIONS = {
  minutes: num(30),
  viewers: num(4),
  /** Default: min(3, minutes / 5). */
  warmupMinutes: num(undefined),
  sampleS: num(5),
  clip: str('woman_speech_head_motion.mp4'),
  portrait: str('real_woman_dark_hair.png'),
};

export async function main(args: string[]): Promise<void> {
  const opts = parseOptions('soak', args, OPTIONS);
  const { minutes, viewers: viewerCount, sampleS, clip, portrait } = opts;
  const warmupMin = opts.warmupMinutes ?? Math.min(3, minutes / 5);

  const frames = await loadClipFrames(drivingClip(clip), 640, 480, 6);
  const server = await ServerProc.start({ overrides: benchOverrides('default'), inspector: false });
  const ticks = new TickLog(server);
  let performer: Connected<ClipPerformer> | null = null;
  const viewers: Connected<CountingViewer>[] = [];
  try {
    const room = await createRoom(server, await uploadPortrait(server, portraitFile(portrait)));
    performer = await connectPerformer(server.url, room.performerToken, new ClipPerformer(frames, 640, 480, 30));
    for (let i = 0; i < viewerCount; i++)
      viewers.push(await connectViewer(server.url, room.viewerToken, new CountingViewer()));
    const t0 = now();
    const end = t0 + minutes * 60_000;
    process.stderr.write(`soak: ${minutes} min, 1 performer, ${viewerCount} viewers, server pid ${server.pid}\n`);

    const mem: MemSample[] = [];
    const memGc: MemSample[] = [];
    const cpu: { tMin: number; cpuPct: number; rssMb: number }[] = [];
    let lastProc = sampleProc(server.pid);
    let lastStats: InboundVideo[] = await Promise.all(viewers.map((v) => inboundVideo(v.peer.pc)));
    let lastTick = ticks.last.get(room.roomId);
    const perMinute: Record<string, unknown>[] = [];
    let nextMinute = t0 + 60_000;
    let minute = 0;
    while (now() < end) {
      await sleep(sampleS * 1000);
      if (!server.alive) throw new Error(`the server process exited (${server.exitCode})`);
      mem.push(memSample(t0, await server.memory(false)));
      if (now() < nextMinute) continue;
      // A minute boundary: memory after a full GC, CPU, frames and drops of the minute that ended.
      memGc.push(memSample(t0, await server.memory(true)));
      const p = sampleProc(server.pid);
      if (p && lastProc)
        cpu.push({
          tMin: round((now() - t0) / 60_000, 2),
          cpuPct: round(((p.cpuS - lastProc.cpuS) / ((p.at - lastProc.at) / 1000)) * 100, 1),
          rssMb: round(p.rssMb, 1),
        });
      lastProc = p;
      const from = nextMinute - 60_000;
      const to = nextMinute;
      const sec0 = Math.floor(from / 1000);
      const stats = await Promise.all(viewers.map((v) => inboundVideo(v.peer.pc)));
      const tick = ticks.last.get(room.roomId);
      const serverFrames = ticks.times(room.roomId).filter((t) => t >= from && t < to).length;
      perMinute.push({
        minute: ++minute,
        server_fps: round(serverFrames / 60, 1),
        server_dropped: (tick?.dropped ?? 0) - (lastTick?.dropped ?? 0),
        viewers_in_room: tick?.viewers ?? 0,
        viewers: viewers.map((v, i) => {
          let n = 0;
          for (let s = sec0; s < sec0 + 60; s++) n += v.peer.bins.get(s) ?? 0;
          const a = lastStats[i]!;
          const b = stats[i]!;
          return {
            fps: round(n / 60, 1),
            frames_dropped: b.framesDropped - a.framesDropped,
            packets_lost: b.packetsLost - a.packetsLost,
            freezes: b.freezeCount - a.freezeCount,
          };
        }),
      });
      const last = perMinute[perMinute.length - 1]!;
      process.stderr.write(
        `soak: minute ${minute}: ${JSON.stringify(last)} rss ${mem[mem.length - 1]!.rssMb} MB heap(gc) ${memGc[memGc.length - 1]!.heapUsedMb} MB\n`,
      );
      lastStats = stats;
      lastTick = tick;
      nextMinute += 60_000;
      // Trim the per-frame times already counted (a 30-minute run would otherwise keep every frame's time).
      const times = ticks.times(room.roomId);
      const keep = times.findIndex((t) => t >= to);
      if (keep > 0) times.splice(0, keep);
    }

    const dropsTotal = ticks.last.get(room.roomId)?.dropped ?? 0;
    const rssSlope = per10(mem, 'rssMb', warmupMin);
    const heapSlope = per10(mem, 'heapUsedMb', warmupMin);
    const heapGcSlope = per10(memGc, 'heapUsedMb', warmupMin);
    const extSlope = per10(mem, 'externalMb', warmupMin);
    const after = mem.filter((m) => m.tMin >= warmupMin);
    const third = after.filter((m) => m.tMin >= minutes - minutes / 3);
    const atWarm = after.slice(0, Math.max(1, Math.round(60 / sampleS)));
    const meanRss = (s: MemSample[]): number => s.reduce((a, b) => a + b.rssMb, 0) / Math.max(1, s.length);
    const lastThirdVsWarmPct = round(((meanRss(third) - meanRss(atWarm)) / meanRss(atWarm)) * 100, 2);
    // Unknown (null) when the run was too short for a slope.
    const flat = [rssSlope, heapGcSlope, lastThirdVsWarmPct].some((v) => !Number.isFinite(v))
      ? null
      : rssSlope < FLAT_RSS && heapGcSlope < FLAT_HEAP_GC && lastThirdVsWarmPct < 5;
    const viewerFps = perMinute.flatMap((m) => (m.viewers as { fps: number }[]).map((v) => v.fps));
    const serverFps = perMinute.map((m) => m.server_fps as number);
    const dropped = viewers.filter((v) => v.disconnects > 0 || v.closedReasons.length > 0).length;
    writeResult('soak', {
      machine: '2-core shared VM, no GPU; server in its own process',
      engine: 'default',
      minutes,
      warmup_minutes: warmupMin,
      performer: `wrtc, ${clip} 640x480 looped at 30 fps + tone`,
      portrait,
      viewers: viewerCount,
      memory: {
        rss_mb_per_10min: rssSlope,
        heap_used_mb_per_10min: heapSlope,
        heap_used_after_gc_mb_per_10min: heapGcSlope,
        external_mb_per_10min: extSlope,
        rss_mb: {
          first_after_warmup: after[0]?.rssMb,
          last: mem[mem.length - 1]?.rssMb,
          min: Math.min(...after.map((m) => m.rssMb)),
          max: Math.max(...after.map((m) => m.rssMb)),
        },
        heap_after_gc_mb: {
          first_after_warmup: memGc.find((m) => m.tMin >= warmupMin)?.heapUsedMb,
          last: memGc[memGc.length - 1]?.heapUsedMb,
        },
        last_third_vs_warmup_end_rss_pct: lastThirdVsWarmPct,
        flat,
        flat_rule: `RSS slope < ${FLAT_RSS} MB/10 min, post-GC heap slope < ${FLAT_HEAP_GC} MB/10 min, last third's mean RSS < 5% above the first minute after warm-up`,
      },
      fps: { server: summarize(serverFps), viewers: summarize(viewerFps) },
      server_dropped_driving_frames_total: dropsTotal,
      viewers_dropped: dropped,
      viewer_disconnects: viewers.map((v) => v.disconnects),
      server_faults: server.faults,
      per_minute: perMinute,
      cpu_per_minute: cpu,
      memory_samples: mem,
      memory_after_gc_samples: memGc,
    });
  } finally {
    ticks.close();
    performer?.close();
    for (const v of viewers) v.close();
    await server.close();
  }
}
