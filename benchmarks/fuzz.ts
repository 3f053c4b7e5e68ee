/**
 * Fuzz: at least 100,000 mutated signaling messages and REST bodies against a real server of the default engine,
 * run in its own process (benchmarks/lib/reliabilityServer.ts) where 'unhandledRejection' and 'uncaughtException'
 * are watched. The corpus and the mutations are in benchmarks/lib/reliabilityFuzz.ts.
 *
 *   npm run bench -- fuzz [--count 100000] [--seed 1] [--lanes 8] [--portrait real_woman_dark_hair.png]
 *
 * Server config: the default engine; rate limits raised (the fuzz is one client address and one key: with the
 * default 300/min it would only measure the limiter); maxRooms 8, so that the valid room creations in the corpus
 * cannot start 50 default-engine workers on 2 cores (beyond 8 the server answers ROOM_BUSY, also a path fuzzed).
 *
 * Recorded: messages by kind, the answer histogram (signaling: ok / error code / no-answer / disconnected; REST:
 * status and code), mutations used, 5xx and INTERNAL answers (bugs, with examples), /healthz checks (every 2,000
 * messages and at the end), unhandled rejections and uncaught exceptions in the server process, whether the
 * server's Object.prototype was polluted, and the server's memory: RSS and heap before, during (every 10 s) and after
 * (after a full GC: when the fuzz stopped, and again once the rooms it created were deleted and 15 s passed).
 *
 * Writes benchmarks/results/fuzz.json.
 */
import { ServerProc, arg, benchOverrides, now, round, sleep } from './lib/reliability.js';
import { runFuzz } from './lib/reliabilityFuzz.js';
import { writeResult } from './lib/stats.js';
import { portraitFile } from '../tests/helpers/media.js';

const MB = 1024 * 1024;

export async function main(args: string[]): Promise<void> {
  const count = Number(arg(args, 'count', '100000'));
  const seed = Number(arg(args, 'seed', '1'));
  const lanes = Number(arg(args, 'lanes', '8'));
  const portrait = arg(args, 'portrait', 'real_woman_dark_hair.png');
  const server = await ServerProc.start({ overrides: benchOverrides('default', { maxRooms: 8 }), inspector: false });
  try {
    const mem = async (gc: boolean): Promise<{ rssMb: number; heapUsedMb: number; externalMb: number }> => {
      const m = await server.memory(gc);
      return { rssMb: round(m.rss / MB, 1), heapUsedMb: round(m.heapUsed / MB, 1), externalMb: round(m.external / MB, 1) };
    };
    const before = await mem(true);
    const t0 = now();
    const during: { t_s: number; rssMb: number; heapUsedMb: number }[] = [];
    let running = true;
    const sampler = (async () => {
      while (running) {
        await sleep(10_000);
        if (!running || !server.alive) break;
        try {
          const m = await mem(false);
          during.push({ t_s: Math.round((now() - t0) / 1000), rssMb: m.rssMb, heapUsedMb: m.heapUsedMb });
        } catch {
          // The server did not answer in time: the health checks and the process state say why.
        }
      }
    })();
    let report;
    try {
      report = await runFuzz(
        { url: server.url, apiKey: server.apiKey, portraitFile: portraitFile(portrait) },
        { count, seed, lanes, onProgress: (n) => process.stderr.write(`fuzz: ${n} messages, server ${server.alive ? 'alive' : 'EXITED'}, faults ${server.faults.length}\n`) },
      );
    } finally {
      running = false;
      await sampler;
    }
    const alive = server.alive;
    const afterStop = alive ? await mem(true) : null;
    const healthBody = alive ? await fetch(`${server.url}/healthz`).then((r) => r.json() as Promise<Record<string, unknown>>, () => null) : null;
    // The rooms the fuzz created (valid POST /api/rooms, each with an engine worker) are state, not a leak: close
    // them, then measure again.
    let roomsClosed = 0;
    if (alive) {
      const list = (await fetch(`${server.url}/api/rooms`, { headers: server.headers }).then((r) => r.json())) as { rooms: { roomId: string }[] };
      for (const r of list.rooms) {
        const res = await fetch(`${server.url}/api/rooms/${r.roomId}`, { method: 'DELETE', headers: server.headers });
        await res.arrayBuffer();
        if (res.status === 204) roomsClosed++;
      }
      await sleep(15_000);
    }
    const settled = alive ? await mem(true) : null;
    const polluted = alive ? (await server.request<{ polluted: boolean }>({ cmd: 'polluted' })).polluted : null;
    const healthz = alive ? await fetch(`${server.url}/healthz`).then((r) => r.status, () => 0) : 0;
    const unhandled = server.faults.filter((f) => f.kind === 'unhandledRejection');
    const uncaught = server.faults.filter((f) => f.kind === 'uncaughtException');
    writeResult('fuzz', {
      machine: '2-core shared VM, no GPU; server in its own process',
      engine: 'default',
      seed,
      lanes,
      messages: report.messages,
      seconds: report.seconds,
      messages_per_s: round(report.messages / report.seconds, 0),
      by_kind: report.byKind,
      crashes: (alive ? 0 : 1) + uncaught.length,
      server_alive: alive,
      server_exit_code: server.exitCode ?? null,
      healthz_at_end: healthz,
      health_checks: report.healthChecks,
      health_failures: report.healthFailures,
      unhandled_rejections: unhandled.length,
      uncaught_exceptions: uncaught.length,
      fault_examples: server.faults.slice(0, 10),
      internal_errors: report.internalErrorCount,
      internal_error_examples: report.internalErrors,
      prototype_polluted: polluted,
      socket_disconnects: report.disconnects,
      signal_answer_ms: report.signalAnswerMs,
      slowest_answers: report.slowestAnswers,
      no_answer_examples: report.noAnswerExamples,
      transport_error_examples: report.transportExamples.slice(0, 5),
      transport_errors: report.transportErrors,
      healthz_after_fuzz: healthBody,
      rooms_closed_after_fuzz: roomsClosed,
      memory_mb: {
        before_gc: before,
        after_fuzz_gc: afterStop,
        after_rooms_closed_15s_gc: settled,
        rss_growth_mb: settled ? round(settled.rssMb - before.rssMb, 1) : null,
        heap_growth_mb: settled ? round(settled.heapUsedMb - before.heapUsedMb, 1) : null,
        max_rss_during: during.length ? Math.max(...during.map((d) => d.rssMb)) : null,
        during,
      },
      outcomes: Object.fromEntries(Object.entries(report.outcomes).sort((a, b) => b[1] - a[1])),
      mutations: report.mutations,
      server_stderr_tail: server.stderr.slice(-20),
    });
  } finally {
    await server.close();
  }
}
