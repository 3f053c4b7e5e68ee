/**
 * Shared parts of the reliability benchmarks (soak, faults, overload, fuzz):
 * - ServerProc: the real server in a child process (benchmarks/lib/reliabilityServer.ts) with an IPC channel for its
 *   memory, its per-room 100 ms ticks, the worker-kill fault and its unhandled rejections;
 * - ClipPerformer: a wrtc performer that sends a shared driving clip's frames at 30 fps (and a tone), and
 *   CountingViewer: a wrtc viewer that only counts and timestamps the frames it receives;
 * - the signaling steps (join, publish, view) over real socket.io clients;
 * - NetCut: a UDP relay for a viewer's ICE candidates and a TCP proxy for its signaling, both of which can be cut
 *   (packets dropped, reads paused) and restored;
 * - measurement helpers: per-window rates, recovery after a fault, a least-squares slope.
 *
 * Every wrtc peer made here must be closed before the process exits (wrtc crashes at exit with live peers).
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import wrtc from '@roamhq/wrtc';
import { filterSdpCandidates } from '../../server/media/candidates.js';
import { waitIceGathering } from '../../server/media/rtc.js';
import type { JoinResponse, RoomStats, SdpResponse, SessionDescription } from '../../server/types/protocol.js';
import { call, connectClient, type ClientSocket } from '../../tests/helpers/socket.js';
import { ViewerClient, type ReceivedFrame } from '../../tests/media/rtcClients.js';
import type { FromServerProc, MemoryUsage, RoomTick, ServerProcArgs, ToServerProc } from './reliabilityProtocol.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** What `npm start` and infra/Dockerfile set MALLOC_MMAP_THRESHOLD_ to. */
export const SERVER_MALLOC_MMAP_THRESHOLD = '131072';
const ALLOW = ['127.0.0.1'];

/** Epoch ms with sub-ms precision, comparable with the server process's tick times. */
export const now = (): number => performance.timeOrigin + performance.now();
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function arg(args: string[], name: string, fallback: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : fallback;
}
export const round = (v: number, digits = 2): number => Math.round(v * 10 ** digits) / 10 ** digits;

/** Server config for the benchmarks: the product's engine, and rate limits that the load itself does not trip. */
export function benchOverrides(engine = 'default', extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    avatar: { engine },
    auth: { perKeyPerMinute: 1_000_000, perAddressPerMinute: 1_000_000 },
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
  /** The last lines of its stderr (bounded). */
  readonly stderr: string[] = [];
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  readonly #tickListeners = new Set<(at: number, rooms: RoomTick[]) => void>();
  #nextId = 1;
  #exited: Promise<number | null>;
  #exitCode: number | null | undefined = undefined;

  private constructor(child: ChildProcess, ready: { url: string; pid: number; apiKey: string }, exited: Promise<number | null>) {
    this.#child = child;
    this.url = ready.url;
    this.pid = ready.pid;
    this.apiKey = ready.apiKey;
    this.#exited = exited;
    void exited.then((c) => (this.#exitCode = c));
  }

  /**
   * `glibcDefaults`: run without the environment `npm start` and the Docker image give the server (glibc's fixed mmap
   * threshold, see infra/Dockerfile), to measure what it changes.
   */
  static async start(args: ServerProcArgs, timeoutMs = 60_000, opts: { glibcDefaults?: boolean } = {}): Promise<ServerProc> {
    const env = { ...process.env };
    if (opts.glibcDefaults) delete env.MALLOC_MMAP_THRESHOLD_;
    else env.MALLOC_MMAP_THRESHOLD_ ??= SERVER_MALLOC_MMAP_THRESHOLD;
    const child = fork(path.join(here, 'reliabilityServer.ts'), [JSON.stringify(args)], {
      execArgv: ['--import', 'tsx', '--expose-gc'],
      env,
      stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
    });
    const stderr: string[] = [];
    let proc: ServerProc | null = null;
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      for (const line of d.split('\n')) {
        if (!line) continue;
        const target = proc?.stderr ?? stderr;
        target.push(line);
        if (target.length > 400) target.shift();
      }
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const ready = await new Promise<{ url: string; pid: number; apiKey: string }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('reliability server did not start in time')), timeoutMs);
      child.on('message', (m: FromServerProc) => {
        if (m.type === 'ready') {
          clearTimeout(timer);
          resolve(m);
        }
      });
      void exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`reliability server exited (${code}) before it was ready: ${stderr.slice(-20).join('\n')}`));
      });
    });
    proc = new ServerProc(child, ready, exited);
    proc.stderr.push(...stderr);
    child.on('message', (m: FromServerProc) => proc.#onMessage(m));
    return proc;
  }

  /** Whether the process is still running. */
  get alive(): boolean {
    return this.#exitCode === undefined;
  }
  get exitCode(): number | null | undefined {
    return this.#exitCode;
  }

  #onMessage(m: FromServerProc): void {
    if (m.type === 'tick') for (const l of this.#tickListeners) l(m.at, m.rooms);
    else if (m.type === 'fault') this.faults.push({ kind: m.kind, message: m.message, at: m.at });
    else if (m.type === 'reply') {
      const p = this.#pending.get(m.id);
      if (!p) return;
      this.#pending.delete(m.id);
      if (m.ok) p.resolve(m.data);
      else p.reject(new Error(m.error));
    }
  }

  onTick(fn: (at: number, rooms: RoomTick[]) => void): () => void {
    this.#tickListeners.add(fn);
    return () => this.#tickListeners.delete(fn);
  }

  request<T>(m: ToServerProc, timeoutMs = 30_000): Promise<T> {
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`server process: no answer to ${m.cmd} in ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.#child.send({ ...m, id });
    });
  }

  memory(gc = false): Promise<MemoryUsage> {
    return this.request<MemoryUsage>({ cmd: 'memory', gc });
  }

  get headers(): Record<string, string> {
    return { authorization: `Bearer ${this.apiKey}` };
  }

  /** SIGTERM, then SIGKILL after 20 s. Resolves with the exit code. */
  async close(): Promise<number | null> {
    if (this.alive) {
      this.#child.kill('SIGTERM');
      const t = setTimeout(() => this.#child.kill('SIGKILL'), 20_000);
      const code = await this.#exited;
      clearTimeout(t);
      return code;
    }
    return this.#exitCode ?? null;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Media: clip frames, performer, viewer

/** A clip decoded to I420 frames (scaled to fit w×h with black bars, at `fps`), `seconds` long; played in a loop. */
export async function loadClipFrames(clip: string, width: number, height: number, seconds: number, fps = 30): Promise<Uint8Array[]> {
  const vf = `scale=${width}:${height}:force_original_aspect_ratio=decrease,pad=${width}:${height}:(ow-iw)/2:(oh-ih)/2,fps=${fps},format=yuv420p`;
  const ff = spawn('ffmpeg', ['-v', 'error', '-stream_loop', '-1', '-i', clip, '-t', String(seconds), '-an', '-vf', vf, '-f', 'rawvideo', '-pix_fmt', 'yuv420p', 'pipe:1'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  ff.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const size = (width * height * 3) / 2;
  const chunks: Buffer[] = [];
  for await (const c of ff.stdout as AsyncIterable<Buffer>) chunks.push(c);
  const code = await new Promise<number | null>((r) => (ff.exitCode !== null ? r(ff.exitCode) : ff.once('close', r)));
  if (code !== 0) throw new Error(`ffmpeg failed (${code}): ${err.trim()}`);
  const all = Buffer.concat(chunks);
  const frames: Uint8Array[] = [];
  for (let o = 0; o + size <= all.length; o += size) frames.push(new Uint8Array(all.subarray(o, o + size)));
  if (frames.length === 0) throw new Error(`no frames decoded from ${clip}`);
  return frames;
}

/**
 * A performer made of a real wrtc peer: sends the clip's frames in a loop at `fps` (a clock-driven schedule, so that
 * timer jitter does not lower the rate) and a 220 Hz tone (48 kHz mono, 10 ms chunks).
 */
export class ClipPerformer {
  readonly pc = new wrtc.RTCPeerConnection({ iceServers: [] });
  readonly #video = new wrtc.nonstandard.RTCVideoSource();
  readonly #audio = new wrtc.nonstandard.RTCAudioSource();
  readonly #tracks: MediaStreamTrack[];
  #timer: NodeJS.Timeout | null = null;
  framesSent = 0;

  constructor(
    readonly frames: readonly Uint8Array[],
    readonly width: number,
    readonly height: number,
    readonly fps = 30,
  ) {
    const v = this.#video.createTrack();
    const a = this.#audio.createTrack();
    this.#tracks = [v, a];
    const stream = new wrtc.MediaStream([v, a]);
    this.pc.addTrack(v, stream);
    this.pc.addTrack(a, stream);
  }

  async offer(): Promise<SessionDescription> {
    const o = await this.pc.createOffer();
    await this.pc.setLocalDescription(o);
    await waitIceGathering(this.pc);
    return { type: 'offer', sdp: filterSdpCandidates(this.pc.localDescription!.sdp, ALLOW) };
  }

  async accept(answer: SessionDescription): Promise<void> {
    await this.pc.setRemoteDescription(answer);
  }

  start(): void {
    const t0 = performance.now();
    let audioSent = 0;
    let n = 0;
    const samples = new Int16Array(480);
    const frame = { width: this.width, height: this.height, data: this.frames[0]! };
    this.#timer = setInterval(() => {
      const t = performance.now() - t0;
      const due = Math.floor((t * this.fps) / 1000);
      // At most one video frame per tick: a late timer skips frames (as a camera would), it never bursts.
      if (due >= this.framesSent) {
        frame.data = this.frames[this.framesSent % this.frames.length]!;
        this.#video.onFrame(frame);
        this.framesSent = due + 1;
      }
      for (const dueAudio = Math.floor(t / 10); audioSent < dueAudio; audioSent++) {
        for (let i = 0; i < 480; i++, n++) samples[i] = Math.round(6000 * Math.sin((2 * Math.PI * 220 * n) / 48000));
        this.#audio.onData({ samples, sampleRate: 48000, bitsPerSample: 16, channelCount: 1, numberOfFrames: 480 });
      }
    }, 5);
  }

  close(): void {
    if (this.#timer) clearInterval(this.#timer);
    for (const t of this.#tracks) t.stop();
    this.pc.close();
  }
}

/** Cumulative inbound video counters of a receiving peer (libwebrtc getStats). */
export interface InboundVideo {
  framesReceived: number;
  framesDecoded: number;
  framesDropped: number;
  packetsLost: number;
  freezeCount: number;
  keyFramesDecoded: number;
}

export async function inboundVideo(pc: RTCPeerConnection): Promise<InboundVideo> {
  const out: InboundVideo = { framesReceived: 0, framesDecoded: 0, framesDropped: 0, packetsLost: 0, freezeCount: 0, keyFramesDecoded: 0 };
  const report = await pc.getStats();
  report.forEach((s: Record<string, unknown>) => {
    if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
    const n = (k: string): number => (typeof s[k] === 'number' ? s[k] : 0);
    out.framesReceived += n('framesReceived');
    out.framesDecoded += n('framesDecoded');
    out.framesDropped += n('framesDropped');
    out.packetsLost += n('packetsLost');
    out.freezeCount += n('freezeCount');
    out.keyFramesDecoded += n('keyFramesDecoded');
  });
  return out;
}

/**
 * A recvonly wrtc viewer (video + audio) that counts the decoded frames it gets (RTCVideoSink) in 1 s bins and, when
 * `keepTimes`, keeps every frame's arrival time (epoch ms).
 */
export class CountingViewer extends ViewerClient {
  readonly times: number[] = [];
  /** Frames per epoch second. */
  readonly bins = new Map<number, number>();
  width = 0;
  height = 0;

  constructor(readonly keepTimes = false) {
    super();
  }

  /** Counts only: no copy of the frame (a benchmark viewer receives hundreds of 512² frames a second). */
  protected override received(f: ReceivedFrame): void {
    const t = now();
    this.width = f.width;
    this.height = f.height;
    if (this.keepTimes) this.times.push(t);
    const s = Math.floor(t / 1000);
    this.bins.set(s, (this.bins.get(s) ?? 0) + 1);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Signaling

export interface RoomLinks {
  roomId: string;
  portraitId: string;
  performerToken: string;
  viewerToken: string;
  performerUrl: string;
  viewerUrl: string;
}

/** Creates a room for an already uploaded portrait (REST, the server's API key). */
export async function createRoom(server: ServerProc, portraitId: string): Promise<RoomLinks> {
  const rr = await fetch(`${server.url}/api/rooms`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...server.headers },
    body: JSON.stringify({ portraitId }),
  });
  if (rr.status !== 201) throw new Error(`room creation failed: ${rr.status} ${await rr.text()}`);
  return { portraitId, ...((await rr.json()) as Omit<RoomLinks, 'portraitId'>) };
}

/** Uploads a portrait file (consent given); returns its id. */
export async function uploadPortrait(server: ServerProc, file: string): Promise<string> {
  const form = new FormData();
  form.append('consent', 'true');
  form.append('file', new Blob([await readFile(file)]), path.basename(file));
  const up = await fetch(`${server.url}/api/portraits`, { method: 'POST', body: form, headers: server.headers });
  if (up.status !== 201) throw new Error(`portrait upload failed: ${up.status} ${await up.text()}`);
  return ((await up.json()) as { id: string }).id;
}

export interface Connected<P> {
  socket: ClientSocket;
  peer: P;
  /** RoomStats pushed to this socket with their arrival time (epoch ms), newest last. */
  stats: (RoomStats & { at: number })[];
  closedReasons: string[];
  disconnects: number;
  close(): void;
}

function watch<P extends { close(): void }>(socket: ClientSocket, peer: P): Connected<P> {
  const c: Connected<P> = {
    socket,
    peer,
    stats: [],
    closedReasons: [],
    disconnects: 0,
    close: () => {
      peer.close();
      socket.disconnect();
    },
  };
  socket.on('stats', (s) => {
    c.stats.push({ ...s, at: now() });
    if (c.stats.length > 4000) c.stats.shift();
  });
  socket.on('closed', (m) => c.closedReasons.push(m.reason));
  socket.on('disconnect', () => c.disconnects++);
  return c;
}

/** A performer: joins with the performer token, publishes and starts sending. */
export async function connectPerformer(signalUrl: string, token: string, performer: ClipPerformer): Promise<Connected<ClipPerformer>> {
  const socket = await connectClient(signalUrl, 15_000);
  try {
    await call<JoinResponse>(socket, 'join', { token }, 30_000);
    const res = await call<SdpResponse>(socket, 'publish', { sdp: await performer.offer() }, 60_000);
    await performer.accept(res.sdp);
    performer.start();
  } catch (err) {
    performer.close();
    socket.disconnect();
    throw err;
  }
  return watch(socket, performer);
}

/**
 * A viewer: joins with the viewer token and views (direct fan-out). `cut`, when given, routes the viewer's media
 * through its UDP relay (the offer's and answer's candidates rewritten).
 */
export async function connectViewer(signalUrl: string, token: string, viewer: CountingViewer, cut?: NetCut): Promise<Connected<CountingViewer>> {
  const socket = await connectClient(signalUrl, 15_000);
  try {
    await call<JoinResponse>(socket, 'join', { token }, 30_000);
    let offer = await viewer.offer();
    if (cut) offer = { type: 'offer', sdp: await cut.rewriteLocal(offer.sdp) };
    const res = await call<SdpResponse>(socket, 'view', { sdp: offer }, 60_000);
    await viewer.accept(cut ? { type: 'answer', sdp: await cut.rewriteRemote(res.sdp.sdp) } : res.sdp);
  } catch (err) {
    viewer.close();
    socket.disconnect();
    throw err;
  }
  return watch(socket, viewer);
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
export class NetCut {
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

  #rewrite(sdp: string, map: Map<number, dgram.Socket>, makeSocket: (port: number) => Promise<dgram.Socket>): Promise<string> {
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
export function recovery(times: readonly number[], faultAt: number, refAt: number, baselineMs = 5000, horizonMs = 20_000): Recovery {
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
