/**
 * Fuzz: at least 100,000 mutated signaling messages and REST bodies against a real server of the default engine,
 * run in its own process (benchmarks/lib/reliabilityServer.ts) where 'unhandledRejection' and 'uncaughtException'
 * are watched. The corpus and the mutations are in benchmarks/lib/reliabilityFuzz.ts.
 *
 *   npm run bench -- fuzz [--count 100000] [--rounds 2] [--seed 1] [--lanes 8] [--portrait real_woman_dark_hair.png]
 *                         [--channel 20000] [--floods 200] [--flood-concurrency 20] [--flood-sockets 400]
 *
 * Server config: the default engine; rate limits raised (the fuzz is one client address and one key: with the
 * default 300/min it would only measure the limiter); maxRooms 8, so that the valid room creations in the corpus
 * cannot start 50 default-engine workers on 2 cores (beyond 8 the server answers ROOM_BUSY, also a path fuzzed).
 *
 * Recorded: messages by kind, the answer histogram (signaling: ok / error code / no-answer / disconnected; REST:
 * status and code), mutations used, 5xx and INTERNAL answers (bugs, with examples), /healthz checks (every 2,000
 * messages and at the end), unhandled rejections and uncaught exceptions in the server process, whether the
 * server's Object.prototype was polluted, and the server's memory: RSS and heap before, during (every 10 s) and after
 * each round (after a full GC: when the round stopped, and again once the rooms it created were deleted and 15 s
 * passed). The messages are sent in --rounds equal rounds on the same server: memory that is bounded reads the same
 * after every round (RSS is not returned to the system after the first engines ran: the rounds are compared). The
 * closed rooms' avatar workers wait idle in the server's worker pool (reused by the next round's rooms; closed after
 * 60 s idle), so they are in the 15 s reading.
 *
 * Then private mode's expression channel (benchmarks/lib/expressionFuzz.ts): a wrtc performer publishes in private
 * mode and sends --channel messages, a third valid, the rest mutated; recorded: the server's refusal counts by
 * reason, the frames it rendered meanwhile, and whether it stayed up (`expression_channel`; --channel 0 skips it).
 *
 * Then attack floods (benchmarks/lib/attackFloods.ts; --floods N requests per flood, 0 skips them) against a second,
 * fresh server process with the product's default limits and quotas (the ones a stranger meets): WHIP/WHEP floods
 * with real offers, forged WHIP tokens, socket.io connections that never join, and /api/verify image bombs; per flood
 * the answers seen, the server's RSS and CPU (process and children, from /proc) and a legitimate client's /healthz
 * times meanwhile. Written to benchmarks/results/fuzz-floods.json.
 *
 * Writes benchmarks/results/fuzz.json (unless --count 0: floods only).
 */
import { num, parseOptions, str } from './lib/args.js';
import { ServerProc, benchOverrides, now, round, sleep } from './lib/reliability.js';
import { runFuzz, type FuzzReport } from './lib/reliabilityFuzz.js';
import { fuzzExpressionChannel, type ChannelFuzzReport } from './lib/expressionFuzz.js';
import { runFloods } from './lib/attackFloods.js';
import { defaultConfig } from '../server/config.js';
import { writeResult } from './lib/stats.js';
import type { MemoryUsage } from './lib/reliabilityProtocol.js';
import { portraitFile } from '../tests/helpers/media.js';

const MB = 1024 * 1024;

/** The rounds' reports as one (counts summed, examples concatenated). */
function mergeReports(rs: FuzzReport[]): FuzzReport {
  const add = (a: Record<string, number>, b: Record<string, number>): Record<string, number> => {
    for (const [k, v] of Object.entries(b)) a[k] = (a[k] ?? 0) + v;
    return a;
  };
  return {
    messages: rs.reduce((a, r) => a + r.messages, 0),
    byKind: rs.reduce((a, r) => add(a, r.byKind), {}),
    outcomes: rs.reduce((a, r) => add(a, r.outcomes), {}),
    mutations: rs.reduce((a, r) => add(a, r.mutations), {}),
    internalErrors: rs.flatMap((r) => r.internalErrors),
    internalErrorCount: rs.reduce((a, r) => a + r.internalErrorCount, 0),
    disconnects: rs.reduce((a, r) => a + r.disconnects, 0),
    healthChecks: rs.reduce((a, r) => a + r.healthChecks, 0),
    healthFailures: rs.reduce((a, r) => a + r.healthFailures, 0),
    transportErrors: rs.reduce((a, r) => a + r.transportErrors, 0),
    transportExamples: rs.flatMap((r) => r.transportExamples),
    noAnswerExamples: rs.flatMap((r) => r.noAnswerExamples),
    signalAnswerMs: {
      p50: Math.max(...rs.map((r) => r.signalAnswerMs.p50)),
      p95: Math.max(...rs.map((r) => r.signalAnswerMs.p95)),
      max: Math.max(...rs.map((r) => r.signalAnswerMs.max)),
    },
    slowestAnswers: rs
      .flatMap((r) => r.slowestAnswers)
      .sort((a, b) => b.ms - a.ms)
      .slice(0, 5),
    seconds: Math.round(rs.reduce((a, r) => a + r.seconds, 0) * 10) / 10,
  };
}

/** The flags (see the header). */
export const OPTIONS = {
  count: num(100000),
  seed: num(1),
  lanes: num(8),
  rounds: num(2),
  portrait: str('real_woman_dark_hair.png'),
  channel: num(20000),
  floods: num(200),
  floodConcurrency: num(20),
  floodSockets: num(400),
};

/** The attack floods against a fresh server with the default limits (see the header). */
async function floodsBench(o: {
  requests: number;
  concurrency: number;
  sockets: number;
  portrait: string;
}): Promise<void> {
  const server = await ServerProc.start({ overrides: { avatar: { engine: 'default' } }, inspector: false });
  try {
    const d = defaultConfig();
    const floods = await runFloods(
      { url: server.url, pid: server.pid, apiKey: server.apiKey, portraitFile: portraitFile(o.portrait) },
      {
        requests: o.requests,
        concurrency: o.concurrency,
        sockets: o.sockets,
        joinTimeoutMs: d.signaling.joinTimeoutMs,
      },
    );
    const alive = server.alive;
    writeResult('fuzz-floods', {
      machine: '2-core shared VM, no GPU; server in its own process',
      engine: 'default',
      limits: {
        whip_per_address_per_minute: d.whip.perAddressPerMinute,
        viewers_per_link: d.quotas.viewersPerLink,
        connections_per_address_per_minute: d.signaling.connectionsPerAddressPerMinute,
        join_timeout_ms: d.signaling.joinTimeoutMs,
        verify_per_address_per_minute: d.verify.perAddressPerMinute,
        verify_max_concurrent: d.verify.maxConcurrent,
        verify_max_pixels: d.verify.maxPixels,
      },
      requests_per_flood: o.requests,
      concurrency: o.concurrency,
      floods,
      server_alive: alive,
      healthz_at_end: alive
        ? await fetch(`${server.url}/healthz`).then(
            (r) => r.status,
            () => 0,
          )
        : 0,
      faults: server.faults.slice(0, 10),
      server_stderr_tail: server.stderr.slice(-10),
    });
  } finally {
    await server.close();
  }
}

export async function main(args: string[]): Promise<void> {
  const {
    count,
    seed,
    lanes,
    rounds: roundsN,
    portrait,
    channel,
    floods,
    floodConcurrency,
    floodSockets,
  } = parseOptions('fuzz', args, OPTIONS);
  if (count > 0) await messagesBench({ count, seed, lanes, roundsN, portrait, channel });
  if (floods > 0)
    await floodsBench({ requests: floods, concurrency: floodConcurrency, sockets: floodSockets, portrait });
}

async function messagesBench(o: {
  count: number;
  seed: number;
  lanes: number;
  roundsN: number;
  portrait: string;
  channel: number;
}): Promise<void> {
  const { count, seed, lanes, roundsN, portrait, channel } = o;
  const server = await ServerProc.start({ overrides: benchOverrides('default', { maxRooms: 8 }), inspector: false });
  try {
    const mem = async (
      gc: boolean,
    ): Promise<{
      rssMb: number;
      heapUsedMb: number;
      externalMb: number;
      workers?: MemoryUsage['workers'];
      threads?: number;
    }> => {
      const m = await server.memory(gc);
      return {
        rssMb: round(m.rss / MB, 1),
        heapUsedMb: round(m.heapUsed / MB, 1),
        externalMb: round(m.external / MB, 1),
        workers: m.workers,
        threads: m.threads,
      };
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
    const target = { url: server.url, apiKey: server.apiKey, portraitFile: portraitFile(portrait) };
    const reports: FuzzReport[] = [];
    const rounds: Record<string, unknown>[] = [];
    let healthBody: Record<string, unknown> | null = null;
    let afterStop: Awaited<ReturnType<typeof mem>> | null = null;
    let settled: Awaited<ReturnType<typeof mem>> | null = null;
    let roomsClosed = 0;
    try {
      for (let round_ = 0; round_ < roundsN && server.alive; round_++) {
        const n = Math.ceil(count / roundsN);
        reports.push(
          await runFuzz(target, {
            count: n,
            seed: seed + round_,
            lanes,
            onProgress: (k) =>
              process.stderr.write(
                `fuzz: round ${round_ + 1}: ${k} messages, server ${server.alive ? 'alive' : 'EXITED'}, faults ${server.faults.length}\n`,
              ),
          }),
        );
        if (!server.alive) break;
        afterStop = await mem(true);
        healthBody = await fetch(`${server.url}/healthz`).then(
          (r) => r.json() as Promise<Record<string, unknown>>,
          () => null,
        );
        // The rooms the fuzz created (valid POST /api/rooms, each with an engine worker) are state, not a leak:
        // close them, then measure again. Equal readings after each round mean the memory is bounded.
        let closed = 0;
        const list = (await fetch(`${server.url}/api/rooms`, { headers: server.headers }).then((r) => r.json())) as {
          rooms: { roomId: string }[];
        };
        for (const r of list.rooms) {
          const res = await fetch(`${server.url}/api/rooms/${r.roomId}`, { method: 'DELETE', headers: server.headers });
          await res.arrayBuffer();
          if (res.status === 204) closed++;
        }
        roomsClosed += closed;
        await sleep(15_000);
        settled = await mem(true);
        rounds.push({
          round: round_ + 1,
          messages: n,
          rooms_at_end: healthBody?.rooms,
          rooms_closed: closed,
          after_fuzz_gc: afterStop,
          after_rooms_closed_15s_gc: settled,
        });
        process.stderr.write(`fuzz: round ${round_ + 1} memory ${JSON.stringify(rounds[rounds.length - 1])}\n`);
      }
    } finally {
      running = false;
      await sampler;
    }
    let channelReport: ChannelFuzzReport | { error: string } | null = null;
    if (channel > 0 && server.alive) {
      try {
        channelReport = await fuzzExpressionChannel(target, { count: channel, seed });
      } catch (err) {
        channelReport = { error: (err as Error).message };
      }
      process.stderr.write(`fuzz: expression channel ${JSON.stringify(channelReport)}\n`);
    }
    const alive = server.alive;
    const report = mergeReports(reports);
    const polluted = alive ? (await server.request<{ polluted: boolean }>({ cmd: 'polluted' })).polluted : null;
    const healthz = alive
      ? await fetch(`${server.url}/healthz`).then(
          (r) => r.status,
          () => 0,
        )
      : 0;
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
      rounds: roundsN,
      healthz_after_fuzz: healthBody,
      rooms_closed_after_fuzz: roomsClosed,
      memory_mb: {
        before_gc: before,
        per_round: rounds,
        after_fuzz_gc: afterStop,
        after_rooms_closed_15s_gc: settled,
        rss_growth_mb: settled ? round(settled.rssMb - before.rssMb, 1) : null,
        heap_growth_mb: settled ? round(settled.heapUsedMb - before.heapUsedMb, 1) : null,
        max_rss_during: during.length ? Math.max(...during.map((d) => d.rssMb)) : null,
        during,
      },
      expression_channel: channelReport
        ? { ...channelReport, server_alive_after: alive, healthz_after: healthz }
        : null,
      outcomes: Object.fromEntries(Object.entries(report.outcomes).sort((a, b) => b[1] - a[1])),
      mutations: report.mutations,
      server_stderr_tail: server.stderr.slice(-20),
    });
  } finally {
    await server.close();
  }
}
