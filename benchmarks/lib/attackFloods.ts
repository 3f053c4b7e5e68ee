/**
 * Attack floods (issue 20, item 8) against a real server process with the product's limits (no raised rate limits):
 * what a stranger or one leaked link can make it spend. Each flood is measured on its own:
 * - the server process (and its children: verify decodes in a child process) sampled every 250 ms from /proc: RSS
 *   before, at most and after, CPU (% of one core) mean and max;
 * - every answer, as "STATUS CODE" (e.g. "429 TOO_MANY_REQUESTS"), or "transport: ..." when the request failed;
 * - a legitimate client's GET /healthz every 500 ms meanwhile: its answer times and failures.
 *
 * Each HTTP flood comes from its own loopback source address (127.0.0.2, .3, ...), so that one flood's exhausted
 * per-address limiter does not hide what the next one costs; an attacker with many addresses gets the same.
 *
 * Floods:
 * - whep: POST /whep/:room with the room's viewer link and a real WebRTC offer (each accepted one is a server peer and
 *   a video encode) — bounded by whip.perAddressPerMinute and quotas.viewersPerLink;
 * - whip: POST /whip/:room with the performer link and a real offer (one publisher per room);
 * - whip_forged: POST /whip/:room with forged tokens (signature check, rate limit);
 * - sockets_unjoined: socket.io connections that never join, held past signaling.joinTimeoutMs (handshake limit,
 *   JOIN_TIMEOUT drop);
 * - verify_bomb_144mpx: POST /api/verify with a 12000² PNG (~0.2 MB on the wire, the issue's attack): refused from
 *   its header;
 * - verify_36mpx: a 6000² PNG, under verify.maxPixels: decoded (shrunk while decoding, in a child process), bounded
 *   by verify.perAddressPerMinute and verify.maxConcurrent.
 */
import { readFileSync, readdirSync } from 'node:fs';
import http from 'node:http';
import zlib from 'node:zlib';
import wrtc from '@roamhq/wrtc';
import { io as ioc, type Socket } from 'socket.io-client';
import { createRoom, uploadPortrait, type RoomLinks } from './loopback.js';
import { percentile } from './stats.js';

const PAGE = 4096;
/** Clock ticks per second of /proc/<pid>/stat (USER_HZ: 100 on Linux). */
const HZ = 100;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const r1 = (v: number): number => Math.round(v * 10) / 10;

/** RSS (bytes) and CPU ticks of a process and its live descendants, from /proc. */
export function procTree(root: number): { rss: number; rootRss: number; ticks: number; pids: number } {
  const parent = new Map<number, number>();
  const stat = new Map<number, string[]>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const s = readFileSync(`/proc/${d}/stat`, 'utf8');
      // Fields after the command name (which may hold spaces): state is field 3.
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      parent.set(Number(d), Number(f[1]));
      stat.set(Number(d), f);
    } catch {
      // The process ended meanwhile.
    }
  }
  const inTree = (pid: number): boolean => {
    for (let p = pid, n = 0; p > 1 && n < 64; p = parent.get(p) ?? 0, n++) if (p === root) return true;
    return false;
  };
  let rss = 0;
  let ticks = 0;
  let rootRss = 0;
  let pids = 0;
  for (const [pid, f] of stat) {
    if (!inTree(pid)) continue;
    pids++;
    // utime 14, stime 15, cutime 16, cstime 17, rss 24 (1-based, counted from pid): here index minus 3.
    const own = Number(f[11]) + Number(f[12]);
    const waited = pid === root ? Number(f[13]) + Number(f[14]) : 0;
    ticks += own + waited;
    const r = Number(f[21]) * PAGE;
    rss += r;
    if (pid === root) rootRss = r;
  }
  return { rss, rootRss, ticks, pids };
}

interface Sample {
  t: number;
  rss: number;
  rootRss: number;
  ticks: number;
}

/** Samples a process tree every `everyMs` until stop(). */
class Sampler {
  readonly #pid: number;
  readonly #samples: Sample[] = [];
  #timer: NodeJS.Timeout | null = null;

  constructor(pid: number, everyMs = 250) {
    this.#pid = pid;
    this.#take();
    this.#timer = setInterval(() => this.#take(), everyMs);
  }

  #take(): void {
    const p = procTree(this.#pid);
    this.#samples.push({ t: performance.now(), rss: p.rss, rootRss: p.rootRss, ticks: p.ticks });
  }

  stop(): Record<string, unknown> {
    if (this.#timer) clearInterval(this.#timer);
    this.#take();
    const s = this.#samples;
    const MB = 1024 * 1024;
    const cpu: number[] = [];
    for (let i = 1; i < s.length; i++) {
      const dt = (s[i]!.t - s[i - 1]!.t) / 1000;
      if (dt > 0) cpu.push(((s[i]!.ticks - s[i - 1]!.ticks) / HZ / dt) * 100);
    }
    const first = s[0]!;
    const last = s[s.length - 1]!;
    const wall = (last.t - first.t) / 1000;
    return {
      rss_mb: {
        before: r1(first.rss / MB),
        max: r1(Math.max(...s.map((x) => x.rss)) / MB),
        after: r1(last.rss / MB),
        server_process_max: r1(Math.max(...s.map((x) => x.rootRss)) / MB),
      },
      cpu_pct_of_one_core: {
        mean: wall > 0 ? r1(((last.ticks - first.ticks) / HZ / wall) * 100) : 0,
        max_250ms: cpu.length ? r1(Math.max(...cpu)) : 0,
      },
      samples: s.length,
    };
  }
}

/** A legitimate client meanwhile: GET /healthz every 500 ms. */
class HealthProbe {
  readonly #times: number[] = [];
  #failures = 0;
  #running = true;
  readonly #loop: Promise<void>;

  constructor(url: string) {
    this.#loop = (async () => {
      while (this.#running) {
        const t0 = performance.now();
        try {
          const r = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(10_000) });
          await r.arrayBuffer();
          if (r.status !== 200) this.#failures++;
          else this.#times.push(performance.now() - t0);
        } catch {
          this.#failures++;
        }
        await sleep(500);
      }
    })();
  }

  async stop(): Promise<Record<string, unknown>> {
    this.#running = false;
    await this.#loop;
    const t = this.#times;
    return {
      answered: t.length,
      failures: this.#failures,
      p50_ms: t.length ? r1(percentile(t, 0.5)) : null,
      max_ms: t.length ? r1(Math.max(...t)) : null,
    };
  }
}

interface Answer {
  status: number;
  code: string;
}

/** One HTTP request from `localAddress` (node:http: fetch cannot choose its source address). */
function send(
  url: string,
  method: string,
  headers: Record<string, string>,
  body: Buffer | string,
  localAddress: string,
): Promise<Answer> {
  return new Promise((resolve) => {
    const u = new URL(url);
    const req = http.request(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname,
        method,
        headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
        localAddress,
        agent: false,
        timeout: 60_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          let code = '';
          try {
            code = ((JSON.parse(Buffer.concat(chunks).toString('utf8')) as { code?: string }).code ?? '') || '';
          } catch {
            // Not JSON (an SDP answer): the status says it.
          }
          resolve({ status: res.statusCode ?? 0, code });
        });
        res.on('error', (e) => resolve({ status: 0, code: `transport: ${e.message}` }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 0, code: `transport: ${e.message}` }));
    req.end(body);
  });
}

/** Runs `n` requests, `concurrency` at a time; returns the answer histogram. */
async function flood(
  n: number,
  concurrency: number,
  one: (i: number) => Promise<Answer>,
): Promise<Record<string, number>> {
  const answers: Record<string, number> = {};
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, n) }, async () => {
      while (next < n) {
        const a = await one(next++);
        const k = a.status ? `${a.status}${a.code ? ` ${a.code}` : ''}` : a.code;
        answers[k] = (answers[k] ?? 0) + 1;
      }
    }),
  );
  return answers;
}

/** A real WebRTC offer from wrtc (the peer is closed at once: the server's peer never connects). */
async function makeOffer(direction: 'sendonly' | 'recvonly'): Promise<string> {
  const pc = new wrtc.RTCPeerConnection();
  try {
    pc.addTransceiver('audio', { direction });
    pc.addTransceiver('video', { direction });
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    return offer.sdp ?? '';
  } finally {
    pc.close();
  }
}

/** A grey PNG of w×h pixels (8-bit greyscale), deflated row by row: large in pixels, small on the wire. */
export async function bigPng(w: number, h: number): Promise<Buffer> {
  const crcTable = new Int32Array(256).map((_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c;
  });
  const crc = (b: Buffer): number => {
    let c = -1;
    for (const x of b) c = crcTable[(c ^ x) & 0xff]! ^ (c >>> 8);
    return (c ^ -1) >>> 0;
  };
  const chunk = (type: string, data: Buffer): Buffer => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 0; // greyscale
  const row = Buffer.alloc(w + 1, 0x80);
  row[0] = 0; // filter: none
  const deflate = zlib.createDeflate({ level: 9 });
  const out: Buffer[] = [];
  deflate.on('data', (c: Buffer) => out.push(c));
  const done = new Promise<void>((resolve, reject) => {
    deflate.on('end', resolve);
    deflate.on('error', reject);
  });
  for (let y = 0; y < h; y++) {
    if (!deflate.write(row)) await new Promise((r) => deflate.once('drain', r));
  }
  deflate.end();
  await done;
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([sig, chunk('IHDR', ihdr), chunk('IDAT', Buffer.concat(out)), chunk('IEND', Buffer.alloc(0))]);
}

export interface FloodOptions {
  /** HTTP requests per flood. */
  requests: number;
  /** Requests in flight at once. */
  concurrency: number;
  /** socket.io connections of the unjoined-socket flood. */
  sockets: number;
  /** The server's signaling.joinTimeoutMs (the unjoined sockets are held past it). */
  joinTimeoutMs: number;
}

export interface FloodTarget {
  url: string;
  pid: number;
  apiKey: string;
  portraitFile: string;
}

/** Runs every flood (see the header); one result per flood. */
export async function runFloods(target: FloodTarget, o: FloodOptions): Promise<Record<string, unknown>[]> {
  const results: Record<string, unknown>[] = [];
  let addr = 2;
  const portraitId = await uploadPortrait(target.url, target.apiKey, target.portraitFile);
  const closeRoom = async (room: RoomLinks): Promise<void> => {
    const r = await fetch(`${target.url}/api/rooms/${room.roomId}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${target.apiKey}` },
    });
    await r.arrayBuffer();
  };
  const measured = async (name: string, what: string, body: () => Promise<Record<string, unknown>>): Promise<void> => {
    process.stderr.write(`fuzz floods: ${name}\n`);
    const sampler = new Sampler(target.pid);
    const probe = new HealthProbe(target.url);
    const t0 = performance.now();
    const out = await body();
    const seconds = r1((performance.now() - t0) / 1000);
    // What stays once the flood stopped: two more seconds of sampling.
    await sleep(2000);
    const res = { flood: name, what, seconds, ...out, server: sampler.stop(), healthz_meanwhile: await probe.stop() };
    process.stderr.write(`fuzz floods: ${JSON.stringify(res)}\n`);
    results.push(res);
  };

  const recvOffer = await makeOffer('recvonly');
  const sendOffer = await makeOffer('sendonly');
  const sdpHeaders = (token: string): Record<string, string> => ({
    'content-type': 'application/sdp',
    authorization: `Bearer ${token}`,
  });

  for (const [name, kind, what] of [
    ['whep', 'whep', 'POST /whep with the viewer link and a real offer'],
    ['whip', 'whip', 'POST /whip with the performer link and a real offer'],
  ] as const) {
    const room = await createRoom(target.url, target.apiKey, portraitId);
    const from = `127.0.0.${addr++}`;
    await measured(name, what, async () => ({
      requests: o.requests,
      from,
      answers: await flood(o.requests, o.concurrency, () =>
        send(
          `${target.url}/${kind}/${room.roomId}`,
          'POST',
          sdpHeaders(kind === 'whep' ? room.viewerToken : room.performerToken),
          kind === 'whep' ? recvOffer : sendOffer,
          from,
        ),
      ),
    }));
    const last = results[results.length - 1]!;
    if (kind === 'whep') {
      // The accepted sessions' peers never connect (the offers' peers were closed): are they reaped while the room
      // lives? RSS of the process tree 15 s and 45 s after the flood.
      const MB = 1024 * 1024;
      await sleep(13_000);
      const at15 = r1(procTree(target.pid).rss / MB);
      await sleep(30_000);
      last.rss_mb_room_open = { after_15s: at15, after_45s: r1(procTree(target.pid).rss / MB) };
    }
    await closeRoom(room);
    await sleep(3000);
    last.rss_mb_3s_after_room_closed = r1(procTree(target.pid).rss / (1024 * 1024));
  }

  {
    const room = await createRoom(target.url, target.apiKey, portraitId);
    const from = `127.0.0.${addr++}`;
    const [body, sig] = room.performerToken.split('.') as [string, string];
    await measured('whip_forged', 'POST /whip with forged performer tokens', async () => ({
      requests: o.requests,
      from,
      answers: await flood(o.requests, o.concurrency, (i) =>
        send(
          `${target.url}/whip/${room.roomId}`,
          'POST',
          sdpHeaders(`${body}.${sig.slice(0, -6)}${String(i).padStart(6, 'A').slice(-6)}`),
          sendOffer,
          from,
        ),
      ),
    }));
    await closeRoom(room);
  }

  await measured('sockets_unjoined', 'socket.io connections that never join, held past the join deadline', async () => {
    const sockets: Socket[] = [];
    const events: Record<string, number> = {};
    const count = (k: string): void => {
      events[k] = (events[k] ?? 0) + 1;
    };
    const t0 = performance.now();
    let lastConnect = t0;
    for (let i = 0; i < o.sockets; i++) {
      const s = ioc(target.url, { transports: ['websocket'], reconnection: false, forceNew: true, timeout: 20_000 });
      s.on('connect', () => {
        count('connected');
        lastConnect = performance.now();
      });
      s.on('connect_error', (e: Error) => count(`connect_error: ${e.message.slice(0, 60)}`));
      s.on('failure', (e: { code?: string }) => count(`failure ${e.code ?? '?'}`));
      s.on('disconnect', (why: string) => count(`disconnect: ${why}`));
      sockets.push(s);
    }
    // Held until the last one to connect is past its join deadline (and 3 s more), at most 60 s.
    await sleep(o.joinTimeoutMs + 3000);
    while (performance.now() < Math.min(lastConnect + o.joinTimeoutMs + 3000, t0 + 60_000)) await sleep(250);
    const stillOpen = sockets.filter((s) => s.connected).length;
    for (const s of sockets) s.disconnect();
    return {
      sockets: o.sockets,
      connects_spread_s: r1((lastConnect - t0) / 1000),
      held_s: r1((performance.now() - t0) / 1000),
      events,
      still_open_after_deadline: stillOpen,
    };
  });

  for (const [name, side, what] of [
    ['verify_bomb_144mpx', 12000, 'POST /api/verify with a 12000x12000 PNG (the issue attack)'],
    ['verify_36mpx', 6000, 'POST /api/verify with a 6000x6000 PNG (under verify.maxPixels: decoded)'],
  ] as const) {
    const png = await bigPng(side, side);
    const from = `127.0.0.${addr++}`;
    await measured(name, what, async () => ({
      requests: o.requests,
      from,
      body_kb: Math.round(png.length / 1024),
      answers: await flood(o.requests, o.concurrency, () =>
        send(`${target.url}/api/verify`, 'POST', { 'content-type': 'image/png' }, png, from),
      ),
    }));
  }
  return results;
}
