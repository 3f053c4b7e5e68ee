/**
 * Fuzzing of the server's inputs: signaling messages (socket.io events, and raw socket.io packets) and REST bodies
 * (JSON room creation, multipart portrait upload, WHIP SDP offers), mutated from a corpus of valid ones, sent to a
 * real server. Used by `npm run bench -- fuzz` (100,000+ messages) and by tests/reliability/fuzz.test.ts (a few
 * thousand, in CI).
 *
 * The corpus is built against the server itself: a portrait uploaded, rooms created, real offers made by wrtc peers
 * (closed at once), so that every unmutated entry is a request the server accepts. Each message is one corpus entry
 * with one mutation (about 1 in 20 is sent as is, so that the valid paths keep running under the fuzz):
 * - value mutations: a type swapped at a random spot, a key dropped or an unknown one added, huge strings (1 KB ..
 *   300 KB, beyond the socket's 256 KB buffer), numbers at the edges, odd Unicode (NUL, lone surrogates), arrays for
 *   objects, the whole payload replaced, no ack, extra arguments;
 * - wire mutations (sent as raw socket.io packets through the engine.io socket, or as raw HTTP bodies): bit flips,
 *   truncation, deep nesting (up to 50,000 levels), prototype-pollution keys (__proto__, constructor.prototype).
 * - REST: the same on JSON bodies, plus multipart breakage (boundary, truncation, bit flips in the image, missing
 *   consent, odd file names, many parts), SDP breakage, wrong content types, methods, paths and API keys.
 *
 * Outcomes: per kind, a histogram of answers (signaling: ok or the error code, no-answer, disconnected; REST: status
 * and code), 5xx / INTERNAL answers kept as examples (they are bugs), health checks (/healthz) every `healthEvery`
 * messages, and whether the prototype of plain objects was polluted (checked by the caller in the server process).
 */
import { readFile } from 'node:fs/promises';
import type { JoinResponse, Result } from '../../server/types/protocol.js';
import { connectClient, request, type ClientSocket } from '../../tests/helpers/socket.js';
import { createRoom, uploadPortrait } from './loopback.js';
import { ClipPerformer } from './performer.js';
import { percentile } from './stats.js';
import { CountingViewer } from './viewer.js';

/** A tiny deterministic PRNG (mulberry32), so that a run can be repeated with its seed. */
export class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

type Role = 'anon' | 'viewer' | 'performer';

interface SignalEntry {
  kind: 'signal';
  role: Role;
  event: string;
  payload: unknown;
}
interface RestEntry {
  kind: 'rest';
  method: string;
  path: string;
  auth: 'key' | 'performer' | 'viewer' | 'none';
  contentType: string | null;
  /** JSON value (sent serialized), SDP text, or multipart. */
  body:
    | { json: unknown }
    | { text: string }
    | { multipart: { consent: string; name: string; file: Uint8Array; fileName: string } }
    | null;
}
type Entry = SignalEntry | RestEntry;

export interface FuzzTarget {
  url: string;
  apiKey: string;
  /** A portrait the server accepts (for the upload corpus and the rooms). */
  portraitFile: string;
}

export interface FuzzOptions {
  count: number;
  seed?: number;
  /** Lanes sending at once (each its own socket.io client or HTTP loop). Default 8. */
  lanes?: number;
  /** Fraction of REST messages; default 0.3. */
  restShare?: number;
  /** Checks /healthz every this many messages; default 2000. */
  healthEvery?: number;
  /** Called every ~5% with the messages sent so far. */
  onProgress?: (sent: number) => void;
  /** Per-request timeout, ms; default 10 s. */
  timeoutMs?: number;
}

export interface FuzzReport {
  messages: number;
  byKind: Record<string, number>;
  /** Answers: `signal:CODE|ok|no-answer|disconnected|raw-sent`, `rest:STATUS:CODE`. */
  outcomes: Record<string, number>;
  /** Mutations used. */
  mutations: Record<string, number>;
  /** 5xx REST answers and INTERNAL signaling answers: examples (bugs). */
  internalErrors: { what: string; answer: string }[];
  internalErrorCount: number;
  /** Socket disconnects seen (the server dropping a socket that sent garbage is expected). */
  disconnects: number;
  healthChecks: number;
  healthFailures: number;
  /** Requests that threw on the client side (connection refused or reset, a socket that could not join). */
  transportErrors: number;
  transportExamples: string[];
  /** Signaling requests with an ack that got no answer within the timeout (the socket still connected). */
  noAnswerExamples: string[];
  /** Answer time of the signaling requests that were answered, ms, and the slowest five. */
  signalAnswerMs: { p50: number; p95: number; max: number };
  slowestAnswers: { what: string; ms: number }[];
  seconds: number;
}

const PNG_SIG = [0x89, 0x50, 0x4e, 0x47];

async function makeOffers(): Promise<{ sendonly: string; recvonly: string }> {
  const p = new ClipPerformer([new Uint8Array(640 * 480 * 1.5)], 640, 480);
  const v = new CountingViewer();
  try {
    return { sendonly: (await p.offer()).sdp, recvonly: (await v.offer()).sdp };
  } finally {
    p.close();
    v.close();
  }
}

interface Setup {
  portraitId: string;
  roomId: string;
  performerToken: string;
  viewerToken: string;
  /** A second room whose performer WHIP offers go to. */
  whipRoomId: string;
  whipToken: string;
  offers: { sendonly: string; recvonly: string };
  png: Uint8Array;
}

async function setup(t: FuzzTarget): Promise<Setup> {
  const png = new Uint8Array(await readFile(t.portraitFile));
  const portraitId = await uploadPortrait(t.url, t.apiKey, t.portraitFile);
  const a = await createRoom(t.url, t.apiKey, portraitId);
  const b = await createRoom(t.url, t.apiKey, portraitId);
  return { ...a, whipRoomId: b.roomId, whipToken: b.performerToken, offers: await makeOffers(), png };
}

function corpus(s: Setup): Entry[] {
  const sig = (role: Role, event: string, payload: unknown): SignalEntry => ({ kind: 'signal', role, event, payload });
  const candidate = {
    candidate: 'candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host generation 0',
    sdpMid: '0',
    sdpMLineIndex: 0,
  };
  return [
    sig('anon', 'join', { token: s.viewerToken }),
    sig('anon', 'join', { token: s.performerToken }),
    sig('viewer', 'view', { sdp: { type: 'offer', sdp: s.offers.recvonly } }),
    sig('viewer', 'ice', { target: 'view', candidate }),
    sig('viewer', 'ice', { target: 'view', candidate: null }),
    sig('performer', 'publish', { sdp: { type: 'offer', sdp: s.offers.sendonly } }),
    sig('performer', 'ice', { target: 'publish', candidate }),
    sig('performer', 'unpublish', {}),
    sig('performer', 'setPortrait', { portraitId: s.portraitId }),
    sig('performer', 'setSettings', {
      settings: {
        expressionStrength: 1.2,
        headMotion: true,
        eyeRetargeting: true,
        lipRetargeting: false,
        poseMode: 'relative',
        steps: 0,
      },
    }),
    sig('performer', 'recalibrate', {}),
    sig('viewer', 'sfu:capabilities', {}),
    sig('viewer', 'sfu:createTransport', {}),
    sig('viewer', 'sfu:connect', {
      transportId: 'abc-123',
      dtlsParameters: { role: 'client', fingerprints: [{ algorithm: 'sha-256', value: 'AA:BB' }] },
    }),
    sig('viewer', 'sfu:consume', {
      transportId: 'abc-123',
      rtpCapabilities: { codecs: [{ kind: 'video', mimeType: 'video/VP8', clockRate: 90000 }], headerExtensions: [] },
    }),
    sig('viewer', 'sfu:resume', { consumerId: 'abc-123' }),
    {
      kind: 'rest',
      method: 'POST',
      path: '/api/rooms',
      auth: 'key',
      contentType: 'application/json',
      body: { json: { portraitId: s.portraitId } },
    },
    {
      kind: 'rest',
      method: 'POST',
      path: '/api/rooms',
      auth: 'key',
      contentType: 'application/json',
      body: { json: {} },
    },
    {
      kind: 'rest',
      method: 'POST',
      path: '/api/portraits',
      auth: 'key',
      contentType: null,
      body: { multipart: { consent: 'true', name: 'fuzz', file: s.png, fileName: 'portrait.png' } },
    },
    {
      kind: 'rest',
      method: 'POST',
      path: `/whip/${s.whipRoomId}`,
      auth: 'performer',
      contentType: 'application/sdp',
      body: { text: s.offers.sendonly },
    },
    {
      kind: 'rest',
      method: 'POST',
      path: `/whep/${s.roomId}`,
      auth: 'viewer',
      contentType: 'application/sdp',
      body: { text: s.offers.recvonly },
    },
    { kind: 'rest', method: 'GET', path: '/api/portraits', auth: 'key', contentType: null, body: null },
    { kind: 'rest', method: 'GET', path: `/api/portraits/${s.portraitId}`, auth: 'key', contentType: null, body: null },
    { kind: 'rest', method: 'GET', path: '/api/rooms', auth: 'key', contentType: null, body: null },
  ];
}

// ---------------------------------------------------------------------------------------------------------------
// Mutations

const HUGE = [1024, 16 * 1024, 70 * 1024, 300 * 1024];
const ODD_STRINGS = [
  '',
  '\u0000',
  '\ud800',
  '\udfff\ud800',
  '‮evil',
  '😀'.repeat(50),
  '%00',
  '../../../../etc/passwd',
  '${7*7}',
  '<script>',
  'null',
  '-1',
  ' ',
  '\r\n\r\n',
];
const ODD_NUMBERS = [0, -0, -1, 1.5, 1e308, -1e308, 2 ** 53 + 1, Number.MIN_VALUE, 65536, 4294967296];

function randomValue(r: Rng, depth = 0): unknown {
  switch (r.int(depth > 2 ? 6 : 8)) {
    case 0:
      return null;
    case 1:
      return r.chance(0.5);
    case 2:
      return r.pick(ODD_NUMBERS);
    case 3:
      return r.pick(ODD_STRINGS);
    case 4:
      return 'x'.repeat(r.int(200));
    case 5:
      return r.int(1000) - 500;
    case 6:
      return Array.from({ length: r.int(4) }, () => randomValue(r, depth + 1));
    default:
      return Object.fromEntries(Array.from({ length: r.int(4) }, (_, i) => [`k${i}`, randomValue(r, depth + 1)]));
  }
}

/** Paths to every node of a JSON value ([] is the root). */
function nodes(v: unknown, at: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  out.push(at);
  if (Array.isArray(v)) v.forEach((x, i) => nodes(x, [...at, i], out));
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) nodes(x, [...at, k], out);
  return out;
}

function setAt(root: unknown, at: (string | number)[], value: unknown): unknown {
  if (at.length === 0) return value;
  let o = root as Record<string | number, unknown>;
  for (const k of at.slice(0, -1)) o = o[k] as Record<string | number, unknown>;
  o[at[at.length - 1]!] = value;
  return root;
}

function getAt(root: unknown, at: (string | number)[]): unknown {
  let o = root;
  for (const k of at) o = (o as Record<string | number, unknown>)[k];
  return o;
}

type ValueMutation =
  | 'none'
  | 'type-swap'
  | 'drop-key'
  | 'extra-key'
  | 'huge-string'
  | 'odd-string'
  | 'odd-number'
  | 'array-for-object'
  | 'replace-payload';

/** Mutates a JSON value (a clone). */
function mutateValue(r: Rng, v: unknown, m: ValueMutation): unknown {
  const root = structuredClone(v);
  const all = nodes(root);
  const at = r.pick(all);
  switch (m) {
    case 'none':
      return root;
    case 'type-swap':
      return setAt(root, at, randomValue(r));
    case 'drop-key': {
      const objs = all.filter((p) => {
        const x = getAt(root, p);
        return x && typeof x === 'object' && !Array.isArray(x) && Object.keys(x).length > 0;
      });
      if (objs.length === 0) return root;
      const o = getAt(root, r.pick(objs)) as Record<string, unknown>;
      delete o[r.pick(Object.keys(o))];
      return root;
    }
    case 'extra-key': {
      const objs = all.filter((p) => {
        const x = getAt(root, p);
        return x && typeof x === 'object' && !Array.isArray(x);
      });
      if (objs.length === 0) return root;
      (getAt(root, r.pick(objs)) as Record<string, unknown>)[
        r.pick(['x', 'toString', 'valueOf', 'hasOwnProperty', 'then', 'length'])
      ] = randomValue(r);
      return root;
    }
    case 'huge-string': {
      const strs = all.filter((p) => typeof getAt(root, p) === 'string');
      return setAt(root, strs.length ? r.pick(strs) : at, 'A'.repeat(r.pick(HUGE)));
    }
    case 'odd-string': {
      const strs = all.filter((p) => typeof getAt(root, p) === 'string');
      if (strs.length === 0) return setAt(root, at, r.pick(ODD_STRINGS));
      const p = r.pick(strs);
      const s = getAt(root, p) as string;
      const i = r.int(s.length + 1);
      return setAt(root, p, s.slice(0, i) + r.pick(ODD_STRINGS) + s.slice(i));
    }
    case 'odd-number':
      return setAt(root, at, r.pick(ODD_NUMBERS));
    case 'array-for-object':
      return setAt(root, at, [getAt(root, at)]);
    case 'replace-payload':
      return randomValue(r);
  }
}

type WireMutation = 'bit-flip' | 'truncate' | 'deep-nesting' | 'proto-pollution';

function flipBits(r: Rng, s: string, flips: number): string {
  const a = [...s];
  for (let i = 0; i < flips && a.length > 0; i++) {
    const k = r.int(a.length);
    a[k] = String.fromCharCode(a[k]!.charCodeAt(0) ^ (1 << r.int(7)));
  }
  return a.join('');
}

/** One character replaced by a random letter or digit (a header value stays a valid header value). */
function swapChar(r: Rng, s: string): string {
  const i = r.int(s.length);
  return s.slice(0, i) + r.pick([...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789']) + s.slice(i + 1);
}

/** Mutates a serialized JSON text (the payload's). */
function mutateText(r: Rng, json: string, m: WireMutation): string {
  switch (m) {
    case 'bit-flip':
      return flipBits(r, json, 1 + r.int(8));
    case 'truncate':
      return json.slice(0, r.int(json.length));
    case 'deep-nesting': {
      const n = r.pick([100, 1000, 10_000, 50_000]);
      const open = r.chance(0.5) ? '[' : '{"a":';
      const close = open === '[' ? ']' : '}';
      // A valid deep value at a random key, or an unbalanced one.
      const deep = open.repeat(n) + '1' + close.repeat(r.chance(0.8) ? n : r.int(n));
      return json.startsWith('{') ? `{"deep":${deep},${json.slice(1)}` : deep;
    }
    case 'proto-pollution': {
      const key = r.pick([
        '"__proto__":{"fuzzPolluted":1}',
        '"constructor":{"prototype":{"fuzzPolluted":1}}',
        '"__proto__":{"toString":1,"fuzzPolluted":1}',
        '"prototype":{"fuzzPolluted":1}',
      ]);
      if (!json.startsWith('{')) return `{${key}}`;
      return json === '{}' ? `{${key}}` : `{${key},${json.slice(1)}`;
    }
  }
}

const VALUE_MUTATIONS: ValueMutation[] = [
  'type-swap',
  'drop-key',
  'extra-key',
  'huge-string',
  'odd-string',
  'odd-number',
  'array-for-object',
  'replace-payload',
];
const WIRE_MUTATIONS: WireMutation[] = ['bit-flip', 'truncate', 'deep-nesting', 'proto-pollution'];

// ---------------------------------------------------------------------------------------------------------------
// Running

class Tally {
  readonly outcomes: Record<string, number> = {};
  readonly mutations: Record<string, number> = {};
  readonly byKind: Record<string, number> = {};
  readonly internal: { what: string; answer: string }[] = [];
  internalCount = 0;
  disconnects = 0;
  transportErrors = 0;
  sent = 0;
  add(rec: Record<string, number>, k: string): void {
    rec[k] = (rec[k] ?? 0) + 1;
  }
  readonly noAnswers: string[] = [];
  /** Signaling answer times, ms, and the slowest few. */
  readonly answerMs: number[] = [];
  readonly slowest: { what: string; ms: number }[] = [];
  answered(what: string, ms: number): void {
    this.answerMs.push(ms);
    if (this.slowest.length < 5 || ms > this.slowest[this.slowest.length - 1]!.ms) {
      this.slowest.push({ what, ms: Math.round(ms) });
      this.slowest.sort((a, b) => b.ms - a.ms);
      this.slowest.length = Math.min(this.slowest.length, 5);
    }
  }
  readonly transport: string[] = [];
  noAnswer(what: string): void {
    if (this.noAnswers.length < 20) this.noAnswers.push(what.slice(0, 1200));
  }
  transportError(what: string): void {
    this.transportErrors++;
    if (this.transport.length < 20) this.transport.push(what.slice(0, 300));
  }
  bug(what: string, answer: string): void {
    this.internalCount++;
    if (this.internal.length < 30) this.internal.push({ what: what.slice(0, 300), answer: answer.slice(0, 300) });
  }
}

/** Emits one event with an ack; rejects at once when the socket disconnects, or after `timeoutMs`. */
function ask(socket: ClientSocket, event: string, payload: unknown, timeoutMs: number): Promise<Result<unknown>> {
  return new Promise((resolve, reject) => {
    // Dropped between the lane's check and now (e.g. replaced by another performer's join): socket.io-client would
    // buffer the emit for a reconnection that never comes.
    if (!socket.connected) {
      reject(new Error('disconnected'));
      return;
    }
    const done = (): void => {
      clearTimeout(timer);
      socket.off('disconnect', onDisconnect);
    };
    const onDisconnect = (): void => {
      done();
      reject(new Error('disconnected'));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error('timeout'));
    }, timeoutMs);
    socket.on('disconnect', onDisconnect);
    (socket as unknown as { emit(ev: string, ...a: unknown[]): void }).emit(event, payload, (res: Result<unknown>) => {
      done();
      resolve(res);
    });
  });
}

/** One signaling lane: a socket of one role, rejoined whenever the server drops it. */
class SignalLane {
  #socket: ClientSocket | null = null;
  #messagesOnSocket = 0;
  /** The last messages sent on this socket (what a request that got no answer was queued behind). */
  #recent: string[] = [];

  constructor(
    readonly role: Role,
    readonly target: FuzzTarget,
    readonly s: Setup,
    readonly timeoutMs: number,
    readonly tally: Tally,
  ) {}

  async #ensure(): Promise<ClientSocket> {
    // Anonymous sockets are renewed now and then, so that valid joins keep being tried on fresh sockets.
    if (this.#socket?.connected && !(this.role === 'anon' && this.#messagesOnSocket > 100)) return this.#socket;
    if (this.#socket) {
      if (!this.#socket.connected) this.tally.disconnects++;
      this.#socket.disconnect();
    }
    this.#messagesOnSocket = 0;
    this.#recent = [];
    const socket = await connectClient(this.target.url, 15_000);
    this.#socket = socket;
    if (this.role !== 'anon') {
      const res = await request<JoinResponse>(
        socket,
        'join',
        { token: this.role === 'viewer' ? this.s.viewerToken : this.s.performerToken },
        this.timeoutMs,
      );
      if (!res.ok) throw new Error(`fuzz: ${this.role} join failed: ${res.error.code}`);
    }
    return socket;
  }

  async send(r: Rng, e: SignalEntry): Promise<void> {
    const t = this.tally;
    let socket: ClientSocket;
    try {
      socket = await this.#ensure();
    } catch (err) {
      t.transportError(`${this.role} connect/join: ${(err as Error).message}`);
      return;
    }
    this.#messagesOnSocket++;
    const note = (what: string): void => {
      this.#recent.push(what.slice(0, 160));
      if (this.#recent.length > 6) this.#recent.shift();
    };
    const wire = r.chance(0.35);
    if (wire) {
      // A raw socket.io EVENT packet ('2' + JSON array) inside a valid engine.io message frame.
      const m = r.pick(WIRE_MUTATIONS);
      t.add(t.mutations, m);
      const json = JSON.stringify(e.payload);
      const packet = r.chance(0.8)
        ? `2[${JSON.stringify(e.event)},${mutateText(r, json, m)}]`
        : flipBits(r, `2${JSON.stringify([e.event, e.payload])}`, 1 + r.int(4));
      (socket.io.engine as unknown as { send(s: string): void }).send(packet);
      note(`raw ${m} ${packet}`);
      t.add(t.outcomes, 'signal:raw-sent');
      return;
    }
    const m: ValueMutation = r.chance(0.06) ? 'none' : r.pick(VALUE_MUTATIONS);
    t.add(t.mutations, m);
    const payload = mutateValue(r, e.payload, m);
    if (r.chance(0.05)) {
      // No ack, or extra arguments: the server must neither crash nor answer.
      const raw = socket as unknown as { emit(ev: string, ...a: unknown[]): void };
      if (r.chance(0.5)) raw.emit(e.event, payload);
      else raw.emit(e.event, payload, randomValue(r), randomValue(r));
      note(`no-ack ${e.event} ${m} ${JSON.stringify(payload)}`);
      t.add(t.outcomes, 'signal:no-ack-sent');
      return;
    }
    const sentAt = performance.now();
    const before = this.#recent.join(' | ');
    note(`${e.event} ${m} ${JSON.stringify(payload)}`);
    try {
      const res = await ask(socket, e.event, payload, this.timeoutMs);
      t.answered(`${e.role} ${e.event} ${m}`, performance.now() - sentAt);
      const k = res.ok ? 'ok' : res.error.code;
      t.add(t.outcomes, `signal:${k}`);
      if (!res.ok && res.error.code === 'INTERNAL')
        t.bug(`${e.role} ${e.event} ${m} ${JSON.stringify(payload)}`, JSON.stringify(res));
    } catch (err) {
      const why = (err as Error).message;
      t.add(t.outcomes, why === 'timeout' ? 'signal:no-answer' : 'signal:disconnected');
      if (why === 'timeout') {
        const json = JSON.stringify(payload) ?? 'undefined';
        t.noAnswer(
          `${e.role} ${e.event} ${m} (${json.length} chars, socket ${socket.connected ? 'connected' : 'closed'} ${socket.id ?? ''}) ${json.slice(0, 200)}; after: ${before}`,
        );
      }
    }
  }

  close(): void {
    this.#socket?.disconnect();
  }
}

function multipartBody(
  r: Rng,
  mp: { consent: string; name: string; file: Uint8Array; fileName: string },
  mutate: boolean,
): { body: Uint8Array<ArrayBuffer>; contentType: string; mutation: string } {
  const boundary = `----fuzz${r.int(1e9)}`;
  let consent = mp.consent;
  let fileName = mp.fileName;
  let file = mp.file;
  let extraParts = 0;
  let mutation = 'none';
  let declared = boundary;
  let cut = -1;
  if (mutate) {
    mutation = r.pick([
      'mp-consent',
      'mp-filename',
      'mp-file-bitflip',
      'mp-file-truncate',
      'mp-boundary',
      'mp-truncate',
      'mp-many-parts',
      'mp-no-file',
      'mp-not-image',
    ]);
    switch (mutation) {
      case 'mp-consent':
        consent = String(r.pick([...ODD_STRINGS, 'false', 'TRUE', 'yes', '1']));
        break;
      case 'mp-filename':
        fileName = r.pick([
          '../../evil.png',
          '',
          'a"b.png',
          'x'.repeat(5000),
          '\u0000.png',
          'évil\r\nX-Injected: 1.png',
        ]);
        break;
      case 'mp-file-bitflip': {
        file = file.slice();
        for (let i = 0; i < 1 + r.int(16); i++) file[r.int(file.length)]! ^= 1 << r.int(8);
        break;
      }
      case 'mp-file-truncate':
        file = file.slice(0, r.int(file.length));
        break;
      case 'mp-boundary':
        declared = r.pick(['', 'x', boundary.slice(0, -1), '"' + boundary, boundary + '"; charset=x']);
        break;
      case 'mp-truncate':
        cut = 1;
        break;
      case 'mp-many-parts':
        extraParts = r.pick([10, 200, 2000]);
        break;
      case 'mp-no-file':
        file = new Uint8Array(0);
        fileName = '';
        break;
      case 'mp-not-image':
        file = new TextEncoder().encode('GIF89a' + 'x'.repeat(r.int(10_000)));
        if (r.chance(0.5)) file.set(PNG_SIG, 0);
        break;
    }
  }
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [];
  const field = (name: string, value: string): void => {
    parts.push(enc.encode(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`));
  };
  field('consent', consent);
  field('name', mp.name);
  for (let i = 0; i < extraParts; i++) field(`extra${i}`, 'x');
  if (mutation !== 'mp-no-file' || r.chance(0.5)) {
    parts.push(
      enc.encode(
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${fileName}"\r\nContent-Type: image/png\r\n\r\n`,
      ),
    );
    parts.push(file);
    parts.push(enc.encode('\r\n'));
  }
  parts.push(enc.encode(`--${boundary}--\r\n`));
  let total = parts.reduce((a, p) => a + p.length, 0);
  const body = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    body.set(p, o);
    o += p.length;
  }
  if (cut > 0) total = r.int(total);
  return { body: body.subarray(0, total), contentType: `multipart/form-data; boundary=${declared}`, mutation };
}

function mutateSdp(r: Rng, sdp: string): { text: string; mutation: string } {
  const m = r.pick([
    'sdp-bitflip',
    'sdp-truncate',
    'sdp-drop-lines',
    'sdp-shuffle',
    'sdp-huge',
    'sdp-garbage-line',
    'sdp-not-sdp',
  ]);
  const lines = sdp.split('\r\n');
  switch (m) {
    case 'sdp-bitflip':
      return { text: flipBits(r, sdp, 1 + r.int(12)), mutation: m };
    case 'sdp-truncate':
      return { text: sdp.slice(0, r.int(sdp.length)), mutation: m };
    case 'sdp-drop-lines':
      return { text: lines.filter(() => r.chance(0.8)).join('\r\n'), mutation: m };
    case 'sdp-shuffle': {
      for (let i = lines.length - 1; i > 0; i--) {
        const j = r.int(i + 1);
        [lines[i], lines[j]] = [lines[j]!, lines[i]!];
      }
      return { text: lines.join('\r\n'), mutation: m };
    }
    case 'sdp-huge':
      return { text: sdp + `a=x-fuzz:${'A'.repeat(r.pick(HUGE))}\r\n`, mutation: m };
    case 'sdp-garbage-line': {
      const i = r.int(lines.length);
      lines.splice(
        i,
        0,
        r.pick([
          'm=video 9 UDP/TLS/RTP/SAVPF',
          'a=rtpmap:96 H264/90000',
          'a=fingerprint:sha-256 ZZ',
          'c=IN IP4 999.1.1.1',
          'a=candidate:x',
          'm=application 0 x',
          '\u0000',
        ]),
      );
      return { text: lines.join('\r\n'), mutation: m };
    }
    default:
      return { text: JSON.stringify({ type: 'offer', sdp }), mutation: m };
  }
}

async function sendRest(
  r: Rng,
  e: RestEntry,
  tg: FuzzTarget,
  s: Setup,
  tally: Tally,
  timeoutMs: number,
): Promise<void> {
  const valid = r.chance(0.06);
  let mutation = 'none';
  let method = e.method;
  let urlPath = e.path;
  let auth = e.auth;
  let contentType = e.contentType;
  let body: Uint8Array<ArrayBuffer> | string | undefined;
  // One mutation of the request line or headers, or of the body.
  const where = valid ? 'none' : r.pick(['body', 'body', 'body', 'body', 'method', 'path', 'auth', 'content-type']);
  // DELETE of the setup's own portrait would close the rooms every lane uses: other paths get it.
  if (where === 'method')
    method = r.pick([
      'GET',
      'PUT',
      'PATCH',
      ...(e.path.includes(s.portraitId) ? [] : ['DELETE']),
      'OPTIONS',
      'HEAD',
      'FUZZ',
    ]);
  if (where === 'path')
    urlPath = r.pick([
      urlPath + '/' + 'x'.repeat(r.pick([1, 300, 9000])),
      urlPath.replace(/[a-f0-9]{8}/, '%2e%2e%2f'),
      urlPath + '?' + '&a=1'.repeat(500),
      urlPath.toUpperCase(),
      urlPath + '%00',
      '/api/' + r.pick(ODD_STRINGS),
    ]);
  if (where === 'auth') auth = r.pick(['none', 'viewer', 'performer', 'key']);
  if (where === 'content-type')
    contentType = r.pick([
      'text/plain',
      'application/json; charset=utf-7',
      'multipart/form-data',
      '',
      'application/sdp',
      'x'.repeat(3000),
    ]);
  if (where !== 'none') mutation = where === 'body' ? '' : `http-${where}`;
  const b = e.body;
  if (b && 'json' in b) {
    const json = JSON.stringify(
      where === 'body' && r.chance(0.6) ? mutateValue(r, b.json, (mutation = r.pick(VALUE_MUTATIONS))) : b.json,
    );
    body = where === 'body' && mutation === '' ? mutateText(r, json, (mutation = r.pick(WIRE_MUTATIONS))) : json;
  } else if (b && 'text' in b) {
    if (where === 'body') {
      const m = mutateSdp(r, b.text);
      body = m.text;
      mutation = m.mutation;
    } else body = b.text;
  } else if (b && 'multipart' in b) {
    const m = multipartBody(r, b.multipart, where === 'body');
    body = m.body;
    if (contentType === null) contentType = m.contentType;
    if (where === 'body') mutation = m.mutation;
  } else if (where === 'body') {
    body = JSON.stringify(randomValue(r));
    mutation = 'body-on-get';
    if (method === 'GET') method = 'POST';
  }
  if (mutation === '') mutation = 'none';
  tally.add(tally.mutations, mutation);
  const headers: Record<string, string> = {};
  if (contentType !== null) headers['content-type'] = contentType;
  const token =
    auth === 'key'
      ? tg.apiKey
      : auth === 'performer'
        ? e.path.startsWith('/whip/')
          ? s.whipToken
          : s.performerToken
        : auth === 'viewer'
          ? s.viewerToken
          : null;
  if (token) headers.authorization = `Bearer ${where === 'auth' && r.chance(0.5) ? swapChar(r, token) : token}`;
  if (method === 'GET' || method === 'HEAD') body = undefined;
  const ctrl = AbortSignal.timeout(timeoutMs);
  try {
    const res = await fetch(tg.url + urlPath, {
      method,
      headers,
      ...(body !== undefined ? { body } : {}),
      signal: ctrl,
    });
    const text = await res.text();
    let code = '';
    try {
      code = ((JSON.parse(text) as { code?: unknown }).code as string | undefined) ?? '';
    } catch {
      code = '';
    }
    tally.add(tally.outcomes, `rest:${res.status}${code ? `:${code}` : ''}`);
    if (res.status >= 500) tally.bug(`${method} ${urlPath.slice(0, 120)} ${mutation}`, `${res.status} ${text}`);
    // A WHIP session that was created must end: the room can take the next offer.
    const loc = res.headers.get('location');
    if (res.status === 201 && loc && (e.path.startsWith('/whip/') || e.path.startsWith('/whep/'))) {
      await fetch(new URL(loc, tg.url), {
        method: 'DELETE',
        headers: token ? { authorization: `Bearer ${token}` } : {},
      }).then((x) => x.arrayBuffer());
    }
  } catch (err) {
    tally.transportError(
      `${method} ${urlPath.slice(0, 100)} ${mutation}: ${(err as Error).message} ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : ''}`,
    );
    tally.add(tally.outcomes, 'rest:transport-error');
  }
}

/** Runs `opts.count` mutated messages against the server at `target.url`. */
export async function runFuzz(target: FuzzTarget, opts: FuzzOptions): Promise<FuzzReport> {
  const seed = opts.seed ?? 1;
  const lanesN = opts.lanes ?? 8;
  const restShare = opts.restShare ?? 0.3;
  const healthEvery = opts.healthEvery ?? 2000;
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const s = await setup(target);
  const entries = corpus(s);
  const signalEntries = entries.filter((e): e is SignalEntry => e.kind === 'signal');
  const restEntries = entries.filter((e): e is RestEntry => e.kind === 'rest');
  const tally = new Tally();
  const t0 = performance.now();
  let healthChecks = 0;
  let healthFailures = 0;
  let nextHealth = healthEvery;
  let nextProgress = Math.ceil(opts.count / 20);
  const roles: Role[] = ['anon', 'viewer', 'performer'];
  const lanes = Array.from({ length: lanesN }, (_, i) => new SignalLane(roles[i % 3]!, target, s, timeoutMs, tally));
  const health = async (): Promise<void> => {
    healthChecks++;
    try {
      const res = await fetch(`${target.url}/healthz`, { signal: AbortSignal.timeout(10_000) });
      await res.arrayBuffer();
      if (res.status !== 200) healthFailures++;
    } catch {
      healthFailures++;
    }
  };
  try {
    await Promise.all(
      lanes.map(async (lane, i) => {
        const r = new Rng(seed * 1000 + i);
        while (tally.sent < opts.count) {
          const n = ++tally.sent;
          if (n >= nextHealth) {
            nextHealth += healthEvery;
            await health();
          }
          if (n >= nextProgress) {
            nextProgress += Math.ceil(opts.count / 20);
            opts.onProgress?.(n);
          }
          if (r.chance(restShare)) {
            tally.add(tally.byKind, 'rest');
            await sendRest(r, r.pick(restEntries), target, s, tally, timeoutMs);
          } else {
            const e = r.pick(
              signalEntries.filter((x) => x.role === lane.role || (lane.role === 'anon' && r.chance(0.2))),
            );
            tally.add(tally.byKind, `signal:${lane.role}`);
            await lane.send(r, e);
          }
        }
      }),
    );
    await health();
  } finally {
    for (const l of lanes) l.close();
  }
  return {
    messages: tally.sent,
    byKind: tally.byKind,
    outcomes: tally.outcomes,
    mutations: tally.mutations,
    internalErrors: tally.internal,
    internalErrorCount: tally.internalCount,
    disconnects: tally.disconnects,
    healthChecks,
    healthFailures,
    transportErrors: tally.transportErrors,
    transportExamples: tally.transport,
    noAnswerExamples: tally.noAnswers,
    signalAnswerMs: {
      p50: Math.round(percentile(tally.answerMs, 50) * 10) / 10,
      p95: Math.round(percentile(tally.answerMs, 95) * 10) / 10,
      max: Math.round(tally.answerMs.reduce((a, b) => Math.max(a, b), 0)),
    },
    slowestAnswers: tally.slowest,
    seconds: Math.round((performance.now() - t0) / 100) / 10,
  };
}
