/**
 * Fan-out benchmark: one performer, N viewers, for each fan-out mode:
 * - `direct`: the server's direct fan-out (one server-side wrtc peer and one VP8 encode per viewer);
 * - `sfu`: mediasoup with one worker (the synthesized video encoded once, forwarded by the worker);
 * - `sfu_2_workers`: mediasoup with two workers and viewersPerRouter = ceil(N/2), so that the room's producers are
 *   piped to a router on the second worker and half the viewers consume there.
 *
 * Every process is real and separate, so that CPU is measured where it is spent (from /proc, all threads):
 * - the server: benchmarks/lib/fanoutServer.ts (createServer) as a child process, its mediasoup workers its children;
 * - the performer, in this process: a wrtc peer publishing a driving clip's frames at a steady 30 fps (640x480) and a
 *   tone, through the real signaling ('publish');
 * - the viewers: wrtc peers in `--viewer-procs` child processes (benchmarks/lib/fanoutViewers.ts), each with its own
 *   socket.io connection and peer, video only. They count frames from getStats (inbound-rtp framesReceived,
 *   framesDecoded). wrtc decodes every received frame whether or not a sink is attached, so the viewers DO decode and
 *   their decoding shares the machine's cores with the server: it is reported apart (viewer_cpu_pct,
 *   viewer_decode_cpu_pct, decode_ms_per_frame).
 *
 * The server runs the 'passthrough' engine by default (the driving picture scaled to the output size): a moving
 * picture at a real bitrate, without the avatar model's CPU cost, which is the same whatever the fan-out.
 *
 * Decoding off, counting RTP frames (modes `sfu_rtp`, `sfu_2_workers_rtp`, the SFU configured as `sfu` and
 * `sfu_2_workers`): the viewers are RTP receivers instead of wrtc peers, so that the SFU's own capacity is measured
 * without the viewers' decoding on the same cores. Each RTP viewer is a mediasoup PlainTransport with SRTP (the worker
 * encrypts per viewer, as for a WebRTC transport; no ICE, no DTLS handshake) and comedia off, connected to a UDP
 * socket of a receiver process (benchmarks/lib/fanoutRtp.ts), with a consumer of the room's video on the router the
 * room assigns the viewer (created by the benchmark server on its bench-only IPC channel through the product's viewer
 * path, room.sfuCreateTransport, so that viewers are counted and spread over routers/workers like WebRTC viewers: see
 * benchmarks/lib/fanoutServer.ts). The receiver counts RTP packets, bytes and frames (distinct RTP timestamps; SRTP
 * leaves the header in clear) per viewer; fps = those frames per second. No socket.io connection per RTP viewer.
 *
 * Each (mode, N) step starts a fresh server, room, performer and viewers, warms up, then measures for `--seconds`.
 * A mode stops after the first step whose median viewer gets < `--stop-fps`. N = 0 is measured first per mode: the
 * server's cost without viewers, so that a row's marginal CPU per viewer is (server CPU - that) / N.
 *
 *   npm run bench -- fanout [--modes direct,sfu,sfu_2_workers] [--direct 1,2,4,8,16] [--sfu 10,25,50,100,150,200]
 *     [--seconds 12] [--warmup 6] [--viewer-procs 2] [--engine passthrough] [--output-size 512] [--stop-fps 15]
 *     [--quiet-busy 40] [--quiet-wait 120] [--others-retry 40]
 *   npm run bench -- fanout --recompute   (derived figures again from the rows in the results file; measures nothing)
 *
 * The machine is shared: before each step the benchmark waits (at most --quiet-wait s) for the machine to be at most
 * --quiet-busy % busy, records what other processes used during the window (others_cpu_pct), and measures a step
 * again once when that was over --others-retry %, keeping the quieter of the two.
 *
 * Writes benchmarks/results/fanout.json: per mode, `max_viewers_25fps` (the largest N at which every viewer decoded
 * >= 25 fps) and `rows`.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RoomStats } from '../server/types/protocol.js';
import { resolveMediasoupWorkerBin } from '../scripts/testData.js';
import { drivingClip, makeY4m, portraitFile } from '../tests/helpers/media.js';
import { flag, num, numList, parseOptions, str } from './lib/args.js';
import { ChildProc } from './lib/child.js';
import { childPids, cpuPercent, machineCpu, sampleProc, type ProcSample } from './lib/fanoutProc.js';
import type {
  RtpOpened,
  RtpRequest,
  RtpStats,
  RtpViewersAdded,
  ServerReady,
  ServerRequest,
  ViewerCounters,
  ViewersAdded,
  ViewersRequest,
  ViewersStats,
} from './lib/fanoutProtocol.js';
import { openRoom } from './lib/loopback.js';
import { ClipPerformer, connectPerformer, readY4m, type Clip } from './lib/performer.js';
import type { Connected } from './lib/viewer.js';
import { percentile, writeResult } from './lib/stats.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const serverEntry = path.join(here, 'lib', 'fanoutServer.ts');
const viewersEntry = path.join(here, 'lib', 'fanoutViewers.ts');
const rtpEntry = path.join(here, 'lib', 'fanoutRtp.ts');
const resultsFile = path.join(here, 'results', 'fanout.json');

type Mode = 'direct' | 'sfu' | 'sfu_2_workers' | 'sfu_rtp' | 'sfu_2_workers_rtp';
/** The modes run by default (wrtc viewers that decode). */
const MODES: readonly Mode[] = ['direct', 'sfu', 'sfu_2_workers'];
/** Every mode, the RTP-viewer ones (decoding off) included: `--modes sfu_rtp,sfu_2_workers_rtp`. */
const ALL_MODES: readonly Mode[] = [...MODES, 'sfu_rtp', 'sfu_2_workers_rtp'];
const isRtp = (m: Mode): boolean => m.endsWith('_rtp');

/** The flags (see the header). */
export const OPTIONS = {
  recompute: flag(),
  modes: str(MODES.join(',')),
  direct: numList('1,2,4,8,16'),
  sfu: numList('10,25,50,100,150,200'),
  sfuRtp: numList('25,50,100,150,200'),
  stopFps: num(15),
  clip: str('man_mouth_wide_open.mp4'),
  seconds: num(12, { positive: true }),
  warmup: num(6, { min: 0 }),
  viewerProcs: num(2, { min: 1, integer: true }),
  engine: str('passthrough', ['passthrough', 'portrait', 'default']),
  outputSize: num(512, { positive: true }),
  quietBusy: num(40),
  quietWait: num(120, { min: 0 }),
  othersRetry: num(40),
  portrait: str('real_older_man_glasses.jpg'),
};
const r1 = (v: number): number => Math.round(v * 10) / 10;
const r2 = (v: number): number => Math.round(v * 100) / 100;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Options {
  seconds: number;
  warmup: number;
  viewerProcs: number;
  engine: 'passthrough' | 'portrait' | 'default';
  outputSize: number;
  workerBin: string;
  portrait: string;
  quietBusyPct: number;
  quietMaxS: number;
  /** Measure a step again (once) when others used more than this much CPU during its window, percent of one core. */
  othersRetryPct: number;
  clip: Clip;
}

type ViewerProc = ChildProc<ViewersRequest, null>;
type RtpProc = ChildProc<RtpRequest, null>;

/** The server child process (benchmarks/lib/fanoutServer.ts): started with a config, stopped with SIGTERM. */
class ServerProc {
  readonly #child: ChildProc<ServerRequest, ServerReady>;
  private constructor(child: ChildProc<ServerRequest, ServerReady>) {
    this.#child = child;
  }

  get url(): string {
    return this.#child.info.url;
  }
  /** The bearer token of the management API (room and portrait calls). */
  get apiKey(): string {
    return this.#child.info.apiKey;
  }
  get stderr(): string[] {
    return this.#child.stderr;
  }

  /**
   * Starts the server, retrying a start-up that fails: the working tree is shared with engineers editing it, and a
   * half-saved file must not end a long run.
   */
  static async start(config: Record<string, unknown>, tries = 6): Promise<ServerProc> {
    for (let i = 1; ; i++) {
      try {
        return new ServerProc(
          await ChildProc.start<ServerRequest, ServerReady>({
            name: 'fanout server',
            entry: serverEntry,
            args: [JSON.stringify(config)],
            stderr: 'keep',
            stderrLines: 100_000,
          }),
        );
      } catch (err) {
        if (i >= tries) throw err;
        process.stderr.write(
          `fanout: server start failed (try ${i}/${tries}), again in 20 s: ${String(err).slice(0, 300)}\n`,
        );
        await sleep(20_000);
      }
    }
  }

  /** RTP viewers, on the bench-only control channel. */
  addRtpViewers(ip: string, ports: number[]): Promise<RtpViewersAdded> {
    return this.#child.request<RtpViewersAdded>({ cmd: 'addRtpViewers', ip, ports });
  }

  /** The server process and its children (mediasoup workers). */
  sample(): { node: ProcSample | null; workers: ProcSample[] } {
    const pid = this.#child.pid;
    const workers = childPids(pid)
      .map(sampleProc)
      .filter((s): s is ProcSample => s !== null && s.comm.startsWith('mediasoup'));
    return { node: sampleProc(pid), workers };
  }

  async stop(): Promise<void> {
    await this.#child.stop(15_000);
  }
}

/** A viewer process or the RTP receiver process. */
function startChild<Req extends { cmd: string }>(name: string, entry: string): Promise<ChildProc<Req, null>> {
  return ChildProc.start<Req, null>({ name, entry });
}

function serverConfig(mode: Mode, n: number, o: Options): Record<string, unknown> {
  const avatar = { engine: o.engine, outputSize: o.outputSize };
  if (mode === 'direct') return { avatar, fanout: { mode: 'direct' } };
  const one = mode === 'sfu' || mode === 'sfu_rtp';
  return {
    avatar,
    fanout: {
      mode: 'sfu',
      mediasoupWorkerBin: o.workerBin,
      workers: one ? 1 : 2,
      viewersPerRouter: one ? Math.max(1, n) : Math.max(1, Math.ceil(n / 2)),
    },
  };
}

interface Row {
  n: number;
  connected: number;
  failed: number;
  /** Decoded frames per second per viewer over the window. */
  fps_min: number | null;
  fps_p50: number | null;
  /** Frames received (assembled by the jitter buffer) per second per viewer. */
  received_fps_min: number | null;
  received_fps_p50: number | null;
  viewers_at_25fps: number;
  /** Synthesized frames per second at the server (RoomStats.fps, median over the window). */
  source_fps: number | null;
  /** Video kbit/s per viewer, median. */
  kbps_p50: number | null;
  /** Width of the decoded video, median over viewers (libwebrtc's encoder scales down under CPU load). */
  frame_width_p50: number | null;
  packets_lost: number;
  server_cpu_pct: number;
  server_node_cpu_pct: number;
  server_workers_cpu_pct: number;
  workers: { pid: number; cpu_pct: number; rss_mb: number }[];
  server_rss_mb: number;
  server_node_rss_mb: number;
  cpu_per_viewer_pct: number | null;
  marginal_cpu_per_viewer_pct: number | null;
  viewer_cpu_pct: number;
  viewer_cpu_per_viewer_pct: number | null;
  viewer_decode_cpu_pct: number;
  decode_ms_per_frame: number | null;
  performer_cpu_pct: number;
  machine_busy_pct: number;
  /** Machine CPU not spent by this benchmark's processes (others' work on the shared machine), percent of a core. */
  others_cpu_pct: number;
  connect_s: number;
  /** How long the step waited for the shared machine to be quiet before it started, s. */
  quiet_wait_s: number;
  /** RTP viewers (`*_rtp` modes): video RTP packets per second per viewer, median. */
  rtp_packets_per_s_p50?: number | null;
  /** RTP viewers: RTCP packets (sender reports) and other payload types (RTX) received per second, all viewers. */
  rtcp_packets_per_s?: number;
  other_packets_per_s?: number;
  /** RTP viewers: the room's routers after the viewers were added (worker pid, viewers), the primary first. */
  routers?: { workerPid: number; viewers: number }[];
  /** RTP viewers: the plain transports' SRTP crypto suite. */
  srtp_crypto_suite?: string | null;
  errors?: string[];
}

/**
 * Waits (at most `maxS`) for a 2 s window in which the whole machine is at most `busyPct` busy (percent of one core),
 * so that a step does not start in the middle of someone else's test run on the shared machine. Returns the wait, s.
 */
async function waitQuiet(busyPct: number, maxS: number): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    const a = machineCpu();
    await sleep(2000);
    const b = machineCpu();
    const busy = ((b.busyS - a.busyS) / 2) * 100;
    const waited = (performance.now() - t0) / 1000;
    if (busy <= busyPct || waited >= maxS) return r1(waited);
  }
}

/** One step, measured again once when other processes took more than o.othersRetryPct of the CPU meanwhile. */
async function measureStep(mode: Mode, n: number, o: Options, baseCpu: number | null): Promise<Row> {
  const row = await runStep(mode, n, o, baseCpu);
  if (row.others_cpu_pct <= o.othersRetryPct) return row;
  process.stderr.write(`fanout ${mode} n=${n}: others used ${row.others_cpu_pct}% meanwhile: measuring again\n`);
  const again = await runStep(mode, n, o, baseCpu);
  return again.others_cpu_pct < row.others_cpu_pct ? again : row;
}

async function runStep(mode: Mode, n: number, o: Options, baseCpu: number | null): Promise<Row> {
  const quietWaitS = await waitQuiet(o.quietBusyPct, o.quietMaxS);
  const server = await ServerProc.start(serverConfig(mode, n, o));
  let performer: Connected<ClipPerformer> | null = null;
  const procs: ViewerProc[] = [];
  const rtpProcs: RtpProc[] = [];
  let rtpInfo: Pick<Row, 'routers' | 'srtp_crypto_suite'> = {};
  try {
    const room = await openRoom(server.url, server.apiKey, o.portrait);
    const wantFanout = mode === 'direct' ? 'direct' : 'sfu';
    const { width, height, frames } = o.clip;
    performer = await connectPerformer(
      server.url,
      room.performerToken,
      new ClipPerformer(frames, width, height, 30, { hz: 440, amplitude: 8000 }),
      { fanout: wantFanout, connectMs: 30_000 },
    );
    const fpsSeen: number[] = [];
    let recording = false;
    performer.socket.on('stats', (s: RoomStats) => {
      if (recording) fpsSeen.push(s.fps);
    });

    const t0 = performance.now();
    const errors: string[] = [];
    let connected = 0;
    if (n > 0 && isRtp(mode)) {
      // RTP viewers: sockets in the receiver processes, then one SRTP plain consumer per socket in the server.
      const count = Math.min(o.viewerProcs, n);
      rtpProcs.push(
        ...(await Promise.all(
          Array.from({ length: count }, () => startChild<RtpRequest>('fanout RTP receiver', rtpEntry)),
        )),
      );
      const opened = await Promise.all(
        rtpProcs.map((p, i) =>
          p.request<RtpOpened>({ cmd: 'open', count: Math.floor(n / count) + (i < n % count ? 1 : 0) }, 60_000),
        ),
      );
      const added = await server.addRtpViewers(
        '127.0.0.1',
        opened.flatMap((x) => x.ports),
      );
      connected = added.added;
      errors.push(...added.errors);
      if (added.videoPt === null) throw new Error(`no RTP viewer could be added: ${added.errors.join('; ')}`);
      await Promise.all(rtpProcs.map((p) => p.request({ cmd: 'watch', pt: added.videoPt! }, 60_000)));
      rtpInfo = { routers: added.routers, srtp_crypto_suite: added.srtpCryptoSuite };
    } else if (n > 0) {
      const count = Math.min(o.viewerProcs, n);
      procs.push(
        ...(await Promise.all(
          Array.from({ length: count }, () => startChild<ViewersRequest>('fanout viewers', viewersEntry)),
        )),
      );
      const added = await Promise.all(
        procs.map((p, i) => {
          const share = Math.floor(n / count) + (i < n % count ? 1 : 0);
          return p.request<ViewersAdded>({
            cmd: 'add',
            url: server.url,
            token: room.viewerToken,
            mode: wantFanout,
            count: share,
            parallel: 4,
          });
        }),
      );
      for (const a of added) {
        connected += a.connected;
        errors.push(...a.errors);
      }
    }
    const connectS = (performance.now() - t0) / 1000;
    await sleep(o.warmup * 1000);

    const snap = async (): Promise<{
      viewers: ViewerCounters[];
      viewerAt: number[];
      rtcp: number;
      other: number;
      server: ReturnType<ServerProc['sample']>;
      vprocs: (ProcSample | null)[];
      self: ProcSample | null;
      machine: ReturnType<typeof machineCpu>;
      at: number;
    }> => {
      const stats = await Promise.all([
        ...procs.map((p) => p.request<ViewersStats>({ cmd: 'stats' }, 60_000)),
        ...rtpProcs.map((p) => p.request<RtpStats>({ cmd: 'stats' }, 60_000)),
      ]);
      return {
        viewers: stats.flatMap((s) => s.viewers),
        // When each viewer's counters were read (its process's clock, ms).
        viewerAt: stats.flatMap((s) => s.viewers.map(() => s.at)),
        rtcp: stats.reduce((t, s) => t + ('rtcpPackets' in s ? s.rtcpPackets : 0), 0),
        other: stats.reduce((t, s) => t + ('otherPackets' in s ? s.otherPackets : 0), 0),
        server: server.sample(),
        vprocs: [...procs, ...rtpProcs].map((p) => sampleProc(p.pid)),
        self: sampleProc(process.pid),
        machine: machineCpu(),
        at: performance.now(),
      };
    };
    const a = await snap();
    recording = true;
    await sleep(o.seconds * 1000);
    recording = false;
    const b = await snap();
    const dt = (b.at - a.at) / 1000;

    const fps: number[] = [];
    const recvFps: number[] = [];
    const kbps: number[] = [];
    const pps: number[] = [];
    let lost = 0;
    let decodeS = 0;
    let decodedFrames = 0;
    b.viewers.forEach((v, i) => {
      const u = a.viewers[i];
      if (!u) return;
      // RTP viewers decode nothing: their fps is the frames received (distinct RTP timestamps), over the receiver
      // process's own clock (the parent's would add the IPC round trips' jitter to the window).
      const vdt = isRtp(mode) ? (b.viewerAt[i]! - a.viewerAt[i]!) / 1000 : dt;
      const received = (v.framesReceived - u.framesReceived) / vdt;
      fps.push(isRtp(mode) ? received : (v.framesDecoded - u.framesDecoded) / dt);
      recvFps.push(received);
      pps.push((v.packetsReceived - u.packetsReceived) / vdt);
      kbps.push(((v.bytesReceived - u.bytesReceived) * 8) / vdt / 1000);
      lost += v.packetsLost - u.packetsLost;
      decodeS += v.totalDecodeTime - u.totalDecodeTime;
      decodedFrames += v.framesDecoded - u.framesDecoded;
    });
    const workers = b.server.workers.map((w) => {
      const w0 = a.server.workers.find((x) => x.pid === w.pid);
      return { pid: w.pid, cpu_pct: r1(w0 ? cpuPercent(w0, w) : 0), rss_mb: r1(w.rssMb) };
    });
    const nodeCpu = a.server.node && b.server.node ? cpuPercent(a.server.node, b.server.node) : 0;
    const workersCpu = workers.reduce((s, w) => s + w.cpu_pct, 0);
    const serverCpu = nodeCpu + workersCpu;
    const viewerCpu = b.vprocs.reduce((s, p, i) => {
      const p0 = a.vprocs[i];
      return s + (p && p0 ? cpuPercent(p0, p) : 0);
    }, 0);
    const nodeRss = b.server.node?.rssMb ?? 0;
    const performerCpu = a.self && b.self ? cpuPercent(a.self, b.self) : 0;
    const machineBusy = ((b.machine.busyS - a.machine.busyS) / dt) * 100;
    const min = (v: number[]): number | null => (v.length ? r1(Math.min(...v)) : null);
    const p50 = (v: number[]): number | null => (v.length ? r1(percentile(v, 50)) : null);
    const row: Row = {
      n,
      connected,
      failed: n - connected,
      fps_min: min(fps),
      fps_p50: p50(fps),
      received_fps_min: min(recvFps),
      received_fps_p50: p50(recvFps),
      viewers_at_25fps: fps.filter((f) => f >= 25).length,
      source_fps: fpsSeen.length ? percentile(fpsSeen, 50) : null,
      kbps_p50: p50(kbps),
      frame_width_p50: isRtp(mode)
        ? null
        : b.viewers.length
          ? percentile(
              b.viewers.map((v) => v.frameWidth),
              50,
            )
          : null,
      packets_lost: lost,
      server_cpu_pct: r1(serverCpu),
      server_node_cpu_pct: r1(nodeCpu),
      server_workers_cpu_pct: r1(workersCpu),
      workers,
      server_rss_mb: r1(nodeRss + workers.reduce((s, w) => s + w.rss_mb, 0)),
      server_node_rss_mb: r1(nodeRss),
      cpu_per_viewer_pct: n > 0 ? r2(serverCpu / n) : null,
      marginal_cpu_per_viewer_pct: n > 0 && baseCpu !== null ? r2((serverCpu - baseCpu) / n) : null,
      viewer_cpu_pct: r1(viewerCpu),
      viewer_cpu_per_viewer_pct: n > 0 ? r2(viewerCpu / n) : null,
      viewer_decode_cpu_pct: r1((decodeS / dt) * 100),
      decode_ms_per_frame: decodedFrames > 0 ? r2((decodeS / decodedFrames) * 1000) : null,
      performer_cpu_pct: r1(performerCpu),
      machine_busy_pct: r1(machineBusy),
      others_cpu_pct: r1(Math.max(0, machineBusy - serverCpu - viewerCpu - performerCpu)),
      connect_s: r1(connectS),
      quiet_wait_s: quietWaitS,
    };
    if (isRtp(mode) && n > 0) {
      row.rtp_packets_per_s_p50 = p50(pps);
      row.rtcp_packets_per_s = r1((b.rtcp - a.rtcp) / dt);
      row.other_packets_per_s = r1((b.other - a.other) / dt);
      Object.assign(row, rtpInfo);
    }
    if (errors.length) row.errors = [...new Set(errors)].slice(0, 5);
    const serverErrors = server.stderr.filter((l) => /"level":"(warn|error)"/.test(l));
    if (serverErrors.length) (row.errors ??= []).push(...serverErrors.slice(0, 5).map((l) => `server: ${l}`));
    return row;
  } finally {
    await Promise.all(procs.map((p) => p.request({ cmd: 'close' }, 60_000).catch(() => null)));
    await Promise.all([...procs, ...rtpProcs].map((p) => p.stop(15_000)));
    performer?.close();
    await server.stop();
  }
}

interface Projection {
  /** The n of the rows fitted (the baseline's 0 included). */
  fitted_n: number[];
  /** Slope of the server's CPU (process + workers) against n, percent of one core per viewer. */
  server_cpu_per_viewer_pct: number;
  /** The same for the mediasoup workers alone (0 in direct mode). */
  workers_cpu_per_viewer_pct: number;
  /** The fit's CPU at n = 0, percent of one core. */
  server_cpu_at_0_pct: number;
  viewers_on_all_cores: number;
  note: string;
}

/** Least-squares line through (x, y) points: slope and intercept. */
function fitLine(pts: [number, number][]): { slope: number; intercept: number } {
  const n = pts.length;
  const mx = pts.reduce((s, p) => s + p[0], 0) / n;
  const my = pts.reduce((s, p) => s + p[1], 0) / n;
  const sxx = pts.reduce((s, p) => s + (p[0] - mx) ** 2, 0);
  const sxy = pts.reduce((s, p) => s + (p[0] - mx) * (p[1] - my), 0);
  const slope = sxx > 0 ? sxy / sxx : 0;
  return { slope, intercept: my - slope * mx };
}

/**
 * How many viewers the server alone would carry on this machine's cores if the viewers ran elsewhere. The server
 * process's CPU and the workers' CPU are fitted apart, each with a line through n = 0 and every n whose median viewer
 * still got >= 25 fps (past that the viewers' decoding starves the whole machine); a part whose slope comes out <= 0
 * (the process in SFU mode: it encodes once whatever the number of viewers, and it gets less CPU as the machine
 * fills) counts as constant, at its mean. Extrapolated to cores x 100 %: a linear extrapolation, not a measurement.
 */
function projection(baseline: Row, rows: Row[]): Projection | null {
  const fit = [baseline, ...rows.filter((r) => r.n > 0 && (r.fps_p50 ?? 0) >= 25)];
  if (fit.length < 3) return null;
  const part = (f: (r: Row) => number): { slope: number; intercept: number } => {
    const l = fitLine(fit.map((r) => [r.n, f(r)]));
    return l.slope > 0 ? l : { slope: 0, intercept: fit.reduce((s, r) => s + f(r), 0) / fit.length };
  };
  const node = part((r) => r.server_node_cpu_pct);
  const workers = part((r) => r.server_workers_cpu_pct);
  const slope = node.slope + workers.slope;
  const intercept = node.intercept + workers.intercept;
  if (slope <= 0) return null;
  return {
    fitted_n: fit.map((r) => r.n),
    server_cpu_per_viewer_pct: r2(slope),
    workers_cpu_per_viewer_pct: r2(workers.slope),
    server_cpu_at_0_pct: r1(intercept),
    viewers_on_all_cores: Math.floor((os.availableParallelism() * 100 - intercept) / slope),
    note: 'linear extrapolation of the server CPU (process and mediasoup workers fitted apart) against n; not measured',
  };
}

/** What a decoding viewer costs, over every row whose median viewer got >= 25 fps (all modes). */
function decodeCost(rows: Row[]): Record<string, number | string> | null {
  const ok = rows.filter((r) => r.n > 0 && (r.fps_p50 ?? 0) >= 25 && r.decode_ms_per_frame !== null);
  if (ok.length === 0) return null;
  const med = (f: (r: Row) => number): number => r2(percentile(ok.map(f), 50));
  return {
    rows: ok.length,
    decode_ms_per_frame_p50: med((r) => r.decode_ms_per_frame!),
    decode_cpu_per_viewer_pct_p50: med((r) => r.viewer_decode_cpu_pct / r.n),
    viewer_process_cpu_per_viewer_pct_p50: med((r) => r.viewer_cpu_per_viewer_pct!),
    note: "libvpx VP8 decode in the wrtc viewers (getStats totalDecodeTime), and the viewer processes' whole CPU per viewer (receive, SRTP, jitter buffer, decode, socket.io); median over rows",
  };
}

/** How the figures are measured (written into the results file). */
const HOW = {
  viewers_decode:
    'wrtc decodes every received video frame with or without a sink (framesDecoded follows framesReceived), so the viewers decode; their CPU (viewer_cpu_pct, of which viewer_decode_cpu_pct is libvpx decode time) shares the cores with the server',
  server_cpu:
    'server_cpu_pct = the server process (all threads: signaling, avatar worker, wrtc ingest decode and encode) + its mediasoup worker processes, from /proc/PID/stat; percent of one core',
  marginal_cpu_per_viewer_pct: '(server_cpu_pct - the same mode with 0 viewers) / n',
  max_viewers_25fps: 'largest n whose every viewer connected and decoded >= 25 fps over the window',
  server_only_projection:
    'lines through the server process CPU and the workers CPU at n = 0 and at the rows whose median viewer got >= 25 fps (a part with slope <= 0 taken as constant), extrapolated to all cores: what the server alone might carry with the viewers on other machines (not measured)',
  fps_collapse:
    'past max_viewers_25fps the whole machine is busy (machine_busy_pct ~200): the viewers decode (viewer_decode_cost), the server process gets less CPU, its synthesized fps (source_fps) and the stream bitrate (kbps_p50) drop',
  rtp_viewers:
    "modes sfu_rtp and sfu_2_workers_rtp (the SFU configured as sfu and sfu_2_workers): decoding off. Each viewer is a mediasoup PlainTransport with SRTP (AES_CM_128_HMAC_SHA1_80: the worker encrypts per viewer, as it does for a WebRTC transport), comedia off, no ICE and no DTLS handshake, connected to a UDP socket of a receiver process, with a consumer of the room's video on the router the room assigns the viewer (room.sfuCreateTransport: counted and spread over routers and workers like a WebRTC viewer; that unused WebRtcTransport is closed). The receivers decrypt and decode nothing; they count, per viewer, RTP packets and bytes (UDP payload, SRTP tag included) and frames = distinct RTP timestamps (SRTP leaves the RTP header in clear); fps, fps_min and max_viewers_25fps are those received frames. Why: wrtc viewers decode every frame (~4 % of a core each, viewer_decode_cost), so on this machine they, not the SFU, run out of CPU first; the RTP viewers' cost (viewer_cpu_pct, the receiver processes) is small and reported apart. Not covered: ICE consent checks, DTLS, transport-cc/REMB feedback and NACKs of real WebRTC viewers, and no socket.io connection per RTP viewer",
  others_cpu_pct:
    'CPU that other processes of the shared machine used during the window (machine busy - server - viewers - performer); a step is measured again once when it is over --others-retry, keeping the quieter run',
};

interface ModeResult {
  /** When this mode's rows were measured (a run of other modes keeps them from the results file). */
  measured_date?: string;
  max_viewers_25fps: number;
  server_only_projection: Projection | null;
  baseline: Row;
  rows: Row[];
}

/** A mode's derived figures from its measured rows. */
function summarizeMode(baseline: Row, rows: Row[]): ModeResult {
  const ok = rows.filter((r) => r.failed === 0 && r.fps_min !== null && r.fps_min >= 25);
  return {
    max_viewers_25fps: ok.length ? Math.max(...ok.map((r) => r.n)) : 0,
    server_only_projection: projection(baseline, rows),
    baseline,
    rows,
  };
}

/**
 * `--recompute`: derives max_viewers_25fps, the projections and the decode cost again, with this code, from the rows
 * already in benchmarks/results/fanout.json (nothing is measured; the measurement's date is kept as measured_date).
 */
async function recompute(): Promise<void> {
  const old = JSON.parse(await readFile(resultsFile, 'utf8')) as Record<string, unknown>;
  // writeResult sets benchmark, date, node and os itself.
  const rest = Object.fromEntries(
    Object.entries(old).filter(([k]) => !['benchmark', 'date', 'node', 'os'].includes(k)),
  );
  const date = old.date;
  const results: Record<string, ModeResult> = {};
  for (const m of ALL_MODES) {
    const r = old[m] as ModeResult | undefined;
    if (r) results[m] = { ...r, ...summarizeMode(r.baseline, r.rows) };
  }
  writeResult('fanout', {
    ...rest,
    measured_date: old.measured_date ?? date,
    recomputed: 'derived fields recomputed from the measured rows (npm run bench -- fanout --recompute)',
    how: HOW,
    viewer_decode_cost: decodeCost(Object.values(results).flatMap((m) => m.rows)),
    ...results,
  });
}

export async function main(args: string[]): Promise<void> {
  const opts = parseOptions('fanout', args, OPTIONS);
  if (opts.recompute) return recompute();
  const modes = opts.modes.split(',') as Mode[];
  for (const m of modes) if (!ALL_MODES.includes(m)) throw new Error(`unknown mode ${m} (${ALL_MODES.join('|')})`);
  const steps: Record<Mode, number[]> = {
    direct: opts.direct,
    sfu: opts.sfu,
    sfu_2_workers: opts.sfu,
    sfu_rtp: opts.sfuRtp,
    sfu_2_workers_rtp: opts.sfuRtp,
  };
  // Modes not run this time keep their rows (and measurement date) from the results file.
  const previous: Record<string, unknown> = await readFile(resultsFile, 'utf8').then(
    (t) => JSON.parse(t) as Record<string, unknown>,
    () => ({}),
  );
  const kept: Record<string, ModeResult> = {};
  for (const m of ALL_MODES) {
    const r = previous[m] as ModeResult | undefined;
    if (r && !modes.includes(m)) {
      const when = previous.measured_date ?? previous.date;
      kept[m] = { measured_date: r.measured_date ?? (typeof when === 'string' ? when : undefined), ...r };
    }
  }
  const stopFps = opts.stopFps;
  const workerBin = resolveMediasoupWorkerBin();
  if (modes.some((m) => m !== 'direct') && !workerBin) {
    throw new Error(
      'fanout benchmark: no mediasoup worker binary (set MEDIASOUP_WORKER_BIN or run npm run mediasoup:worker)',
    );
  }
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'avatar-fanout-bench-'));
  try {
    const clipName = opts.clip;
    const y4m = await makeY4m({
      source: drivingClip(clipName),
      width: 640,
      height: 480,
      fps: 30,
      seconds: 6,
      out: path.join(tmp, 'camera.y4m'),
    });
    const o: Options = {
      seconds: opts.seconds,
      warmup: opts.warmup,
      viewerProcs: opts.viewerProcs,
      engine: opts.engine as Options['engine'],
      outputSize: opts.outputSize,
      workerBin: workerBin ?? '',
      quietBusyPct: opts.quietBusy,
      quietMaxS: opts.quietWait,
      othersRetryPct: opts.othersRetry,
      portrait: portraitFile(opts.portrait),
      clip: await readY4m(y4m),
    };
    await rm(y4m);

    const results: Record<string, ModeResult> = {};
    const write = (complete: boolean): void => {
      const all: Record<string, ModeResult> = {};
      for (const m of ALL_MODES) {
        const r = results[m] ?? kept[m];
        if (r) all[m] = r;
      }
      writeResult('fanout', {
        description:
          'One performer (wrtc, 640x480 clip at 30 fps) -> server child process -> N viewers on one machine. Modes direct, sfu, sfu_2_workers: wrtc viewers (video only, in child processes) that decode; fps = frames decoded per viewer per second (getStats). Modes sfu_rtp, sfu_2_workers_rtp: decoding off, RTP viewers = one mediasoup PlainTransport with SRTP per viewer (no ICE/DTLS, no decode) sending to a UDP socket of a receiver process, fps = distinct RTP timestamps received per viewer per second (how.rtp_viewers says exactly what and why)',
        machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? 'unknown' },
        options: {
          seconds: o.seconds,
          warmup: o.warmup,
          viewer_procs: o.viewerProcs,
          engine: o.engine,
          output_size: o.outputSize,
          clip: clipName,
          stop_fps: stopFps,
          quiet_busy_pct: o.quietBusyPct,
          quiet_wait_max_s: o.quietMaxS,
          others_retry_pct: o.othersRetryPct,
        },
        how: HOW,
        load_average_1m: r2(os.loadavg()[0]!),
        viewer_decode_cost: decodeCost(Object.values(all).flatMap((m) => m.rows)),
        modes_run: modes,
        complete,
        ...all,
      });
    };
    for (const mode of modes) {
      const baseline = await measureStep(mode, 0, o, null);
      process.stderr.write(
        `fanout ${mode} n=0: server ${baseline.server_cpu_pct}% source ${baseline.source_fps} fps\n`,
      );
      const rows: Row[] = [];
      for (const n of steps[mode]) {
        const row = await measureStep(mode, n, o, baseline.server_cpu_pct);
        rows.push(row);
        process.stderr.write(
          `fanout ${mode} n=${n}: fps min ${row.fps_min} p50 ${row.fps_p50} (recv p50 ${row.received_fps_p50}), ` +
            `server ${row.server_cpu_pct}% (node ${row.server_node_cpu_pct}, workers ${row.workers.map((w) => w.cpu_pct).join('/')}), ` +
            `viewers ${row.viewer_cpu_pct}% (decode ${row.viewer_decode_cpu_pct}%), performer ${row.performer_cpu_pct}%, ` +
            `others ${row.others_cpu_pct}%, machine ${row.machine_busy_pct}%, failed ${row.failed}\n`,
        );
        // Written after each step too, so that a run cut short keeps every row it measured.
        results[mode] = { measured_date: new Date().toISOString(), ...summarizeMode(baseline, rows) };
        write(false);
        if (row.fps_p50 === null || row.fps_p50 < stopFps || row.connected < n / 2) break;
      }
      results[mode] = { measured_date: new Date().toISOString(), ...summarizeMode(baseline, rows) };
      // Written after each mode, so that a run cut short keeps what it measured.
      write(mode === modes.at(-1));
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
