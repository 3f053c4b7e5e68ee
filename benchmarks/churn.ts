/**
 * Churn: the server's memory (RSS after a full GC) when rooms and peers come and go, one part at a time, so that a
 * native leak can be pinned on avatar worker threads, on wrtc peers or on whole rooms.
 *
 *   npm run bench -- churn [--mode workers|peers|rooms|all] [--rounds 6] [--rooms 4] [--viewers 8] [--live-s 3]
 *                          [--settle-s 5] [--engine default] [--spares 1] [--quiet-s 0] [--glibc-defaults]
 *                          [--clip woman_speech_head_motion.mp4] [--portrait real_woman_dark_hair.png] [--out churn]
 *
 * The server runs as `npm start` runs it (MALLOC_MMAP_THRESHOLD_=131072, see infra/Dockerfile); --glibc-defaults
 * runs it without (glibc's dynamic mmap threshold), --spares sets config.avatar.spareWorkers.
 *
 * Each mode runs on its own server process (benchmarks/lib/reliabilityServer.ts, --expose-gc, direct fan-out):
 * - workers: per round, --rooms rooms are created through REST (each an avatar worker with the engine loaded and the
 *   portrait prepared) and deleted; no peer at all.
 * - peers: one room lives throughout; per round a wrtc performer publishes (a shared clip, 30 fps) and --viewers wrtc
 *   viewers watch for --live-s seconds, then all of them close.
 * - rooms: both together, as the fuzz bench's rounds do: per round --rooms rooms, each with a performer and --viewers
 *   viewers for --live-s seconds, then every peer closes and the rooms are deleted.
 * After each round: --settle-s seconds, a full GC, then process.memoryUsage() and the number of threads of the
 * server process (/proc/PID/status; worker threads that were never joined show here). Bounded memory reads the same
 * after every round once the first has run (the first engines and peers allocate what is reused later). With
 * --quiet-s, one more sample after that many seconds without rooms (longer than the worker pool's 60 s idle timeout:
 * the idle workers beyond the spare are closed).
 *
 * Writes benchmarks/results/<out>.json: per mode, RSS / heap / threads after each round and the RSS slope (MB per
 * round) over rounds 2..N.
 */
import { readFile } from 'node:fs/promises';
import { flag, num, parseOptions, str } from './lib/args.js';
import {
  ClipPerformer,
  CountingViewer,
  SERVER_MALLOC_MMAP_THRESHOLD,
  ServerProc,
  benchOverrides,
  connectPerformer,
  connectViewer,
  createRoom,
  loadClipFrames,
  round,
  sleep,
  slope,
  uploadPortrait,
  type Connected,
} from './lib/reliability.js';
import { drivingClip, portraitFile } from '../tests/helpers/media.js';
import { waitFor } from '../tests/helpers/wait.js';
import { writeResult } from './lib/stats.js';

const MB = 1024 * 1024;
type Mode = 'workers' | 'peers' | 'rooms';

interface RoundMemory {
  round: number;
  rssMb: number;
  heapUsedMb: number;
  externalMb: number;
  threads: number;
  /** RSS by mapping (/proc/PID/smaps): the brk heap (glibc's main arena), anonymous maps (thread arenas, V8 heaps of
   * the isolates, large allocations), files (code, model files mapped). */
  rssByMapMb: { brk: number; anon: number; file: number };
}

async function threadsOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/^Threads:\s+(\d+)/m.exec(status)?.[1] ?? -1);
}

async function rssByMap(pid: number): Promise<RoundMemory['rssByMapMb']> {
  const text = await readFile(`/proc/${pid}/smaps`, 'utf8');
  const kb = { brk: 0, anon: 0, file: 0 };
  let kind: keyof typeof kb = 'anon';
  for (const line of text.split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      const name = head[1] ?? '';
      kind = name === '[heap]' ? 'brk' : name === '' || name.startsWith('[') ? 'anon' : 'file';
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) kb[kind] += Number(rss[1]);
  }
  return { brk: round(kb.brk / 1024, 1), anon: round(kb.anon / 1024, 1), file: round(kb.file / 1024, 1) };
}

async function sample(server: ServerProc, roundNo: number): Promise<RoundMemory> {
  const m = await server.memory(true);
  return {
    rssByMapMb: await rssByMap(server.pid),
    round: roundNo,
    rssMb: round(m.rss / MB, 1),
    heapUsedMb: round(m.heapUsed / MB, 1),
    externalMb: round(m.external / MB, 1),
    threads: await threadsOf(server.pid),
  };
}

async function deleteRoom(server: ServerProc, roomId: string): Promise<void> {
  const res = await fetch(`${server.url}/api/rooms/${roomId}`, { method: 'DELETE', headers: server.headers });
  await res.arrayBuffer();
  if (res.status !== 204) throw new Error(`room delete failed: ${res.status}`);
}

/** A performer and `viewers` viewers on one room for liveS seconds, then all closed. */
async function liveRoom(
  server: ServerProc,
  links: { performerToken: string; viewerToken: string },
  frames: Uint8Array[],
  viewers: number,
  liveS: number,
): Promise<void> {
  const peers: Connected<ClipPerformer | CountingViewer>[] = [];
  try {
    peers.push(await connectPerformer(server.url, links.performerToken, new ClipPerformer(frames, 640, 480)));
    for (let i = 0; i < viewers; i++)
      peers.push(await connectViewer(server.url, links.viewerToken, new CountingViewer()));
    const vs = peers.slice(1).map((p) => p.peer as CountingViewer);
    await waitFor(() => vs.every((v) => v.frames > 0), 60_000, 'viewer frames');
    await sleep(liveS * 1000);
  } finally {
    for (const p of peers) p.close();
  }
}

interface Options {
  rounds: number;
  rooms: number;
  viewers: number;
  liveS: number;
  settleS: number;
  engine: string;
  spares: number;
  quietS: number;
  glibcDefaults: boolean;
  frames: Uint8Array[];
  portrait: string;
}

async function runMode(mode: Mode, o: Options): Promise<Record<string, unknown>> {
  const avatar = { engine: o.engine, spareWorkers: o.spares };
  const server = await ServerProc.start(
    { overrides: benchOverrides(o.engine, { maxRooms: Math.max(8, o.rooms + 1), avatar }), inspector: false },
    60_000,
    { glibcDefaults: o.glibcDefaults },
  );
  try {
    const portraitId = await uploadPortrait(server, o.portrait);
    const before = await sample(server, 0);
    const rounds: RoundMemory[] = [];
    const fixed = mode === 'peers' ? await createRoom(server, portraitId) : null;
    for (let r = 1; r <= o.rounds; r++) {
      if (mode === 'peers') {
        await liveRoom(server, fixed!, o.frames, o.viewers, o.liveS);
      } else {
        const links = [];
        for (let i = 0; i < o.rooms; i++) links.push(await createRoom(server, portraitId));
        if (mode === 'rooms') await Promise.all(links.map((l) => liveRoom(server, l, o.frames, o.viewers, o.liveS)));
        for (const l of links) await deleteRoom(server, l.roomId);
      }
      await sleep(o.settleS * 1000);
      rounds.push(await sample(server, r));
      process.stderr.write(`churn: ${mode} round ${r}: ${JSON.stringify(rounds.at(-1))}\n`);
    }
    if (fixed) await deleteRoom(server, fixed.roomId);
    // Quiet: no room for longer than the pool's idle timeout (60 s), so the idle workers beyond the spare are closed.
    let quiet: RoundMemory | null = null;
    if (o.quietS > 0) {
      await sleep(o.quietS * 1000);
      quiet = await sample(server, -1);
      process.stderr.write(`churn: ${mode} after ${o.quietS} s without rooms: ${JSON.stringify(quiet)}\n`);
    }
    const later = rounds.slice(1);
    return {
      before,
      per_round: rounds,
      rss_slope_mb_per_round_after_first:
        later.length >= 2
          ? round(
              slope(
                later.map((x) => x.round),
                later.map((x) => x.rssMb),
              ),
              1,
            )
          : null,
      rss_growth_mb_first_to_last: rounds.length >= 2 ? round(rounds.at(-1)!.rssMb - rounds[0]!.rssMb, 1) : null,
      threads_before_after: [before.threads, rounds.at(-1)?.threads ?? null],
      after_quiet: quiet ? { quiet_s: o.quietS, ...quiet } : null,
      faults: server.faults.length,
    };
  } finally {
    await server.close();
  }
}

/** The flags (see the header). */
export const OPTIONS = {
  spares: num(1),
  quietS: num(0),
  rounds: num(6),
  rooms: num(4),
  viewers: num(8),
  liveS: num(3),
  settleS: num(5),
  mode: str('all'),
  engine: str('default'),
  portrait: str('real_woman_dark_hair.png'),
  clip: str('woman_speech_head_motion.mp4'),
  out: str('churn'),
  glibcDefaults: flag(),
};

export async function main(args: string[]): Promise<void> {
  const opts = parseOptions('churn', args, OPTIONS);
  const modeArg = opts.mode;
  const modes: Mode[] = modeArg === 'all' ? ['workers', 'peers', 'rooms'] : [modeArg as Mode];
  for (const m of modes) if (!['workers', 'peers', 'rooms'].includes(m)) throw new Error(`unknown --mode ${m}`);
  const o: Options = {
    spares: opts.spares,
    quietS: opts.quietS,
    glibcDefaults: opts.glibcDefaults,
    rounds: opts.rounds,
    rooms: opts.rooms,
    viewers: opts.viewers,
    liveS: opts.liveS,
    settleS: opts.settleS,
    engine: opts.engine,
    portrait: portraitFile(opts.portrait),
    frames: modes.some((m) => m !== 'workers') ? await loadClipFrames(drivingClip(opts.clip), 640, 480, 4) : [],
  };
  const results: Record<string, unknown> = {};
  for (const m of modes) results[m] = await runMode(m, o);
  writeResult(opts.out, {
    machine: '2-core shared VM, no GPU; server in its own process',
    malloc_env: o.glibcDefaults
      ? 'glibc defaults (dynamic mmap threshold)'
      : `MALLOC_MMAP_THRESHOLD_=${process.env.MALLOC_MMAP_THRESHOLD_ ?? SERVER_MALLOC_MMAP_THRESHOLD} (as npm start)`,
    malloc_arena_max: process.env.MALLOC_ARENA_MAX ?? null,
    options: {
      rounds: o.rounds,
      rooms: o.rooms,
      viewers: o.viewers,
      live_s: o.liveS,
      settle_s: o.settleS,
      quiet_s: o.quietS,
      engine: o.engine,
      spare_workers: o.spares,
    },
    modes: results,
  });
}
