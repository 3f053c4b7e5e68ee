/**
 * Shared parts of the reliability benchmarks (soak, faults, overload, fuzz, churn):
 * - ServerProc: the real server in a child process (benchmarks/lib/reliabilityServer.ts, through
 *   benchmarks/lib/child.ts) for its memory, its per-room 100 ms ticks, the worker-kill fault and its unhandled
 *   rejections;
 * - the performer (benchmarks/lib/performer.ts: ClipPerformer sends a shared driving clip's frames at 30 fps and a
 *   220 Hz tone) and the viewer (benchmarks/lib/viewer.ts: CountingViewer only counts and timestamps the frames it
 *   receives), and the signaling steps (join, publish, view), re-exported here;
 * - NetCut: a UDP relay for a viewer's ICE candidates and a TCP proxy for its signaling, both of which can be cut
 *   (packets dropped, reads paused) and restored;
 * - measurement helpers: per-window rates, recovery after a fault, a least-squares slope.
 *
 * Every wrtc peer made here must be closed before the process exits (wrtc crashes at exit with live peers).
 */
import dgram from 'node:dgram';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ChildProc } from './child.js';
import { createRoom as createRoomAt, uploadPortrait as uploadPortraitTo, type RoomLinks } from './loopback.js';
import type {
  MemoryUsage,
  RoomTick,
  ServerEvent,
  ServerProcArgs,
  ServerReady,
  ToServerProc,
} from './reliabilityProtocol.js';
import type { SdpRewriter } from './viewer.js';

export { ClipPerformer, connectPerformer, loadClipFrames } from './performer.js';
export { CountingViewer, connectViewer, inboundVideo, now, type Connected, type InboundVideo } from './viewer.js';
export type { RoomLinks };

const here = path.dirname(fileURLToPath(import.meta.url));
/** What `npm start` and infra/Dockerfile set MALLOC_MMAP_THRESHOLD_ to. */
export const SERVER_MALLOC_MMAP_THRESHOLD = '131072';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
export const round = (v: number, digits = 2): number => Math.round(v * 10 ** digits) / 10 ** digits;

/**
 * Server config for the benchmarks: the product's engine, and rate limits and per-key quotas that the load itself
 * does not trip (one client address and one key send everything; maxRooms still bounds the rooms).
 */
export function benchOverrides(engine = 'default', extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    avatar: { engine },
    auth: { perKeyPerMinute: 1_000_000, perAddressPerMinute: 1_000_000 },
    signaling: { connectionsPerAddressPerMinute: 1_000_000 },
    whip: { perAddressPerMinute: 1_000_000 },
    quotas: { roomsPerKey: 100_000, portraitsPerKey: 10_000_000, bytesPerKey: Number.MAX_SAFE_INTEGER },
    ...extra,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The server process

export interface ServerFault {
  kind: 'unhandledRejection' | 'uncaughtException';
  message: string;
  at: number;
}

/** The real server in a child process; see reliabilityServer.ts. */
export class ServerProc {
  readonly url: string;
  readonly pid: number;
  readonly apiKey: string;
  readonly faults: ServerFault[] = [];
  readonly #child: ChildProc<ToServerProc, ServerReady, ServerEvent>;

  private constructor(child: ChildProc<ToServerProc, ServerReady, ServerEvent>) {
    this.#child = child;
    this.url = child.info.url;
    this.pid = child.info.pid;
    this.apiKey = child.info.apiKey;
    child.onEvent((e) => {
      if (e.type === 'fault') this.faults.push({ kind: e.kind, message: e.message, at: e.at });
    });
  }

  /**
   * `glibcDefaults`: run without the environment `npm start` and the Docker image give the server (glibc's fixed mmap
   * threshold, see infra/Dockerfile), to measure what it changes.
   */
  static async start(
    args: ServerProcArgs,
    timeoutMs = 60_000,
    opts: { glibcDefaults?: boolean } = {},
  ): Promise<ServerProc> {
    const env = { ...process.env };
    if (opts.glibcDefaults) delete env.MALLOC_MMAP_THRESHOLD_;
    else env.MALLOC_MMAP_THRESHOLD_ ??= SERVER_MALLOC_MMAP_THRESHOLD;
    const child = await ChildProc.start<ToServerProc, ServerReady, ServerEvent>({
      name: 'reliability server',
      entry: path.join(here, 'reliabilityServer.ts'),
      args: [JSON.stringify(args)],
      nodeFlags: ['--expose-gc'],
      env,
      stdout: 'inherit',
      stderr: 'keep',
      readyTimeoutMs: timeoutMs,
    });
    return new ServerProc(child);
  }

  /** The last lines of its stderr (bounded). */
  get stderr(): string[] {
    return this.#child.stderr;
  }

  /** Whether the process is still running. */
  get alive(): boolean {
    return this.#child.alive;
  }
  get exitCode(): number | null | undefined {
    return this.#child.exitCode;
  }

  onTick(fn: (at: number, rooms: RoomTick[]) => void): () => void {
    return this.#child.onEvent((e) => {
      if (e.type === 'tick') fn(e.at, e.rooms);
    });
  }

  request<T>(m: ToServerProc, timeoutMs = 30_000): Promise<T> {
    return this.#child.request<T>(m, timeoutMs);
  }

  memory(gc = false): Promise<MemoryUsage> {
    return this.request<MemoryUsage>({ cmd: 'memory', gc });
  }

  get headers(): Record<string, string> {
    return { authorization: `Bearer ${this.apiKey}` };
  }

  /** SIGTERM, then SIGKILL after 20 s. Resolves with the exit code. */
  close(): Promise<number | null> {
    return this.#child.stop(20_000);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Signaling

/** Creates a room for an already uploaded portrait (REST, the server's API key). */
export function createRoom(server: ServerProc, portraitId: string): Promise<RoomLinks> {
  return createRoomAt(server.url, server.apiKey, portraitId);
}

/** Uploads a portrait file (consent given); returns its id. */
export function uploadPortrait(server: ServerProc, file: string): Promise<string> {
  return uploadPortraitTo(server.url, server.apiKey, file);
}

// ---------------------------------------------------------------------------------------------------------------
// A cuttable network path for one viewer

const CANDIDATE_RE = /^(a=candidate:\S+ \d+ )(udp|UDP|tcp|TCP)( \d+ )(127\.0\.0\.1) (\d+)( typ .*)$/;

/**
 * A cuttable path between one viewer and the server, on loopback:
 * - media: a UDP relay. Each of the viewer's host candidates is replaced (in its offer) by a relay socket that the
 *   server talks to, and each of the server's candidates (in the answer) by a relay socket that the viewer talks to,
 *   so that every packet of the viewer's ICE/DTLS/RTP/RTCP goes through this process; TCP candidates are removed.
 * - signaling: a TCP proxy in front of the server's port (the viewer's socket.io connects to `url`).
 * cut(): the relay drops every packet both ways and the proxy stops reading both ways (as a pulled cable: TCP data
 * waits and is retransmitted later, UDP is lost); restore() undoes it.
 */
export class NetCut implements SdpRewriter {
  #cut = false;
  droppedPackets = 0;
  relayedPackets = 0;
  /** Relay sockets facing the server, by the viewer port they stand for. */
  readonly #towardServer = new Map<number, dgram.Socket>();
  /** Relay sockets facing the viewer, by the server port they stand for. */
  readonly #towardViewer = new Map<number, dgram.Socket>();
  readonly #sockets: dgram.Socket[] = [];
  readonly #proxy: net.Server;
  readonly #conns = new Set<net.Socket>();
  #url = '';

  private constructor(target: URL) {
    this.#proxy = net.createServer((client) => {
      const upstream = net.connect(Number(target.port), target.hostname);
      for (const s of [client, upstream]) {
        this.#conns.add(s);
        s.on('close', () => this.#conns.delete(s));
        s.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
        if (this.#cut) s.pause();
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
  }

  /** A proxy to the server at `serverUrl` (http://127.0.0.1:PORT); its own address is `url`. */
  static async create(serverUrl: string): Promise<NetCut> {
    const self = new NetCut(new URL(serverUrl));
    await new Promise<void>((resolve) => self.#proxy.listen(0, '127.0.0.1', resolve));
    self.#url = `http://127.0.0.1:${(self.#proxy.address() as net.AddressInfo).port}`;
    return self;
  }

  /** The signaling address through the proxy. */
  get url(): string {
    return this.#url;
  }

  get cutNow(): boolean {
    return this.#cut;
  }

  async #bind(): Promise<dgram.Socket> {
    const s = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
    this.#sockets.push(s);
    return s;
  }

  #rewrite(
    sdp: string,
    map: Map<number, dgram.Socket>,
    makeSocket: (port: number) => Promise<dgram.Socket>,
  ): Promise<string> {
    return (async () => {
      const lines = sdp.split('\r\n');
      const out: string[] = [];
      for (const line of lines) {
        if (!line.startsWith('a=candidate:')) {
          out.push(line);
          continue;
        }
        const m = CANDIDATE_RE.exec(line);
        if (!m || m[2]!.toLowerCase() !== 'udp') continue;
        const port = Number(m[5]);
        let s = map.get(port);
        if (!s) {
          s = await makeSocket(port);
          map.set(port, s);
        }
        out.push(`${m[1]}${m[2]}${m[3]}${m[4]} ${s.address().port}${m[6]}`);
      }
      return out.join('\r\n');
    })();
  }

  /** The viewer's offer: its candidates become relay sockets that forward to the viewer. */
  rewriteLocal(sdp: string): Promise<string> {
    // From the server (to a viewer port this socket stands for): forward out of the socket facing the viewer that
    // stands for the sending server port.
    return this.#rewrite(sdp, this.#towardServer, (viewerPort) => this.#forwarder(this.#towardViewer, viewerPort));
  }

  /** The server's answer: its candidates become relay sockets that forward to the server. */
  rewriteRemote(sdp: string): Promise<string> {
    return this.#rewrite(sdp, this.#towardViewer, (serverPort) => this.#forwarder(this.#towardServer, serverPort));
  }

  /** A relay socket that forwards what it receives to `port`, out of the socket `via` maps the sender's port to. */
  async #forwarder(via: Map<number, dgram.Socket>, port: number): Promise<dgram.Socket> {
    const s = await this.#bind();
    s.on('message', (msg, rinfo) => {
      const out = via.get(rinfo.port);
      if (this.#cut || !out) {
        this.droppedPackets++;
        return;
      }
      this.relayedPackets++;
      out.send(msg, port, '127.0.0.1');
    });
    return s;
  }

  cut(): void {
    this.#cut = true;
    for (const c of this.#conns) c.pause();
  }

  restore(): void {
    this.#cut = false;
    for (const c of this.#conns) c.resume();
  }

  close(): void {
    for (const s of this.#sockets) s.close();
    for (const c of this.#conns) c.destroy();
    this.#proxy.close();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Measurement

/** Least-squares slope of y over x (units of y per unit of x); NaN with fewer than 2 points. */
export function slope(xs: readonly number[], ys: readonly number[]): number {
  const n = Math.min(xs.length, ys.length);
  if (n < 2) return Number.NaN;
  let sx = 0;
  let sy = 0;
  for (let i = 0; i < n; i++) {
    sx += xs[i]!;
    sy += ys[i]!;
  }
  const mx = sx / n;
  const my = sy / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return den > 0 ? num / den : Number.NaN;
}

/** Events (times, epoch ms) in [from, to). `times` ascending. */
export function countIn(times: readonly number[], from: number, to: number): number {
  let lo = 0;
  let hi = times.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (times[mid]! < from) lo = mid + 1;
    else hi = mid;
  }
  let n = 0;
  for (let i = lo; i < times.length && times[i]! < to; i++) n++;
  return n;
}

export interface Recovery {
  /** Frames per second before the fault (over `baselineMs`). */
  baselineFps: number;
  /** From the reference time to the start of the first 1 s window with ≥ 80% of the baseline rate, ms (null: never). */
  recoverMs: number | null;
  /** The longest gap between two frames from the fault to the recovery, ms. */
  longestGapMs: number;
  /** Baseline rate × (recovery − fault) − frames received in that time (≥ 0). */
  framesLost: number;
  /** Frames received from the fault to the recovery. */
  framesInOutage: number;
  /**
   * The longest time without a frame, from the last frame before the fault to 1 s after the recovery, ms: what a
   * fault that recovers within the first 1 s window (recoverMs 0) cost.
   */
  outageMs: number;
}

/**
 * Recovery of a stream of frame times after a fault at `faultAt`, measured from `refAt` (the fault itself, or the
 * moment the network came back): the first time t ≥ refAt such that [t, t + 1 s) holds ≥ 80% of the baseline rate,
 * searched in 50 ms steps up to `horizonMs` after refAt.
 */
export function recovery(
  times: readonly number[],
  faultAt: number,
  refAt: number,
  baselineMs = 5000,
  horizonMs = 20_000,
): Recovery {
  const baselineFps = countIn(times, faultAt - baselineMs, faultAt) / (baselineMs / 1000);
  const need = 0.8 * baselineFps;
  let recAt: number | null = null;
  for (let t = refAt; t <= refAt + horizonMs; t += 50) {
    if (countIn(times, t, t + 1000) >= need && need > 0) {
      recAt = t;
      break;
    }
  }
  const end = recAt ?? refAt + horizonMs;
  let prev = faultAt;
  let gap = 0;
  for (const t of times) {
    if (t < faultAt) continue;
    if (t > end) break;
    gap = Math.max(gap, t - prev);
    prev = t;
  }
  gap = Math.max(gap, end - prev);
  const received = countIn(times, faultAt, end);
  let last = faultAt;
  for (const t of times) {
    if (t > faultAt) break;
    last = t;
  }
  let outage = 0;
  for (const t of times) {
    if (t <= faultAt) continue;
    if (t > end + 1000) break;
    outage = Math.max(outage, t - last);
    last = t;
  }
  return {
    baselineFps: round(baselineFps, 1),
    recoverMs: recAt === null ? null : Math.round(recAt - refAt),
    longestGapMs: Math.round(gap),
    framesLost: Math.max(0, Math.round((baselineFps * (end - faultAt)) / 1000 - received)),
    framesInOutage: received,
    outageMs: Math.round(Math.max(outage, Math.min(end + 1000, times.at(-1) ?? end) - last)),
  };
}

/** Server ticks turned into per-room frame times: each tick's frames spread evenly over its 100 ms. */
export class TickLog {
  readonly frameTimes = new Map<string, number[]>();
  readonly last = new Map<string, RoomTick>();
  readonly #off: () => void;

  constructor(server: ServerProc) {
    this.#off = server.onTick((at, rooms) => {
      for (const r of rooms) {
        this.last.set(r.roomId, r);
        let a = this.frameTimes.get(r.roomId);
        if (!a) this.frameTimes.set(r.roomId, (a = []));
        for (let i = 0; i < r.frames; i++) a.push(at - 100 + ((i + 0.5) * 100) / r.frames);
      }
    });
  }

  times(roomId: string): number[] {
    return this.frameTimes.get(roomId) ?? [];
  }

  close(): void {
    this.#off();
  }
}
