/**
 * The one config object. Built and validated once at start-up from (lowest to highest precedence) the defaults
 * below, an optional JSON file (AVATAR_CONFIG=path) and environment variables. Nothing below this module reads
 * process.env: every part of the server receives the typed slices it needs. Durations are in ms, sizes in bytes.
 */
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { parseApiKeys } from './auth/apiKeys.js';
import { AppError } from './errors.js';
import {
  applyProvenanceEnv,
  defaultProvenanceConfig,
  validateProvenanceConfig,
  type ProvenanceConfig,
} from './provenance/config.js';
import type { LogLevel } from './logger.js';
import { applyIceEnv, defaultTurnConfig, validateIceConfig, type TurnConfig } from './media/iceConfig.js';
import type { IceServer } from './types/protocol.js';
import { packageInfo } from './util/packageInfo.js';

export interface Config {
  /** HTTP/socket.io listen host; default '127.0.0.1' (loopback: set HOST=0.0.0.0 to serve other machines). */
  host: string;
  /** Listen port; 0 picks a free port; default 8080 (env PORT). */
  port: number;
  /** Base URL used in performer/viewer links; default derived from the request's Host header. */
  publicUrl: string | null;
  logLevel: LogLevel;
  /** Folder for uploaded portraits and their consent records; default ./data (env AVATAR_DATA_DIR). */
  dataDir: string;
  /** HMAC secret for room tokens; default: random per process (env AVATAR_TOKEN_SECRET to persist links). */
  tokenSecret: string;
  /** Lifetime of performer/viewer room links (tokens); default 12 h (env AVATAR_LINK_TTL_HOURS). */
  tokenTtlMs: number;
  /** How long a room waits for its performer to reconnect; default 30 s. */
  roomGraceMs: number;
  /** How long a new room waits for its performer's first join before it closes; default 10 min. */
  roomIdleMs: number;
  /** Most rooms open at once; POST /api/rooms answers 409 ROOM_BUSY beyond it; default 50. */
  maxRooms: number;
  auth: {
    /**
     * API keys for management calls (upload/list/download/delete portraits, create/delete/revoke rooms), each
     * owning what it creates. Env AVATAR_API_KEYS=name1:secret1,name2:secret2. None: the server keeps one for the
     * local operator in <dataDir>/operator-key and `npm start` prints a studio link with it.
     */
    apiKeys: { name: string; secret: string }[];
    /** REST requests per minute per API key; default 600. */
    perKeyPerMinute: number;
    /** REST requests per minute per client address; default 300. */
    perAddressPerMinute: number;
    /**
     * Studio sign-in attempts (`/?key=` and POST /signin) per minute per client address: a burst of this many, then
     * one per 60/n s (429 TOO_MANY_REQUESTS with Retry-After), so the address cannot be used to guess keys; default 10.
     */
    signInPerMinute: number;
    /** Face model downloads (GET /models/face/*, public: the browser's tracker) per address per minute. */
    modelDownloadsPerMinute: number;
  };
  /**
   * What one API key, one room and one link may hold at once, so that no key or link can take what others need. A
   * refusal says which quota it hit. Counted per server process (each node of a cluster counts its own).
   */
  quotas: {
    /**
     * Rooms one API key may have open at once; POST /api/rooms answers 403 QUOTA_EXCEEDED beyond it (other keys still
     * get rooms up to maxRooms); default 10.
     */
    roomsPerKey: number;
    /** Portraits one API key may store; an upload beyond it is refused (403 QUOTA_EXCEEDED); default 100. */
    portraitsPerKey: number;
    /** Bytes one API key may store (each portrait's upload plus its normalised PNG); default 1 GiB. */
    bytesPerKey: number;
    /**
     * Viewers of one room at once: sockets joined as viewers and WHEP sessions (each WHEP viewer is a server peer and a
     * video encode); one more is refused with VIEWER_LIMIT (409); default 200.
     */
    viewersPerRoom: number;
    /**
     * Viewers one link (token) may hold at once, counted as for viewersPerRoom; a room's viewer link and its performer
     * link (which may preview over WHEP) count apart. Default 200.
     */
    viewersPerLink: number;
  };
  signaling: {
    /**
     * socket.io connections (handshakes) per minute per client address: a burst of this many, then one per 60/n s;
     * beyond it the handshake is answered 429 TOO_MANY_REQUESTS with Retry-After; default 300.
     */
    connectionsPerAddressPerMinute: number;
    /** A socket that has not joined a room this long after connecting is sent JOIN_TIMEOUT and dropped; default 10 s. */
    joinTimeoutMs: number;
  };
  whip: {
    /**
     * WHIP/WHEP requests (POST, DELETE, PATCH) per minute per client address: a burst of this many, then one per 60/n s
     * (429 TOO_MANY_REQUESTS with Retry-After); default 120.
     */
    perAddressPerMinute: number;
  };
  consent: {
    /** The consent text uploaders agree to; stored with every portrait record. */
    text: string;
    /** Its version; an upload naming another version is refused (CONSENT_REQUIRED). */
    version: string;
  };
  upload: {
    /** Largest accepted upload; default 10 MiB. */
    maxBytes: number;
    /** Largest accepted image in pixels (w*h); default 40 Mpx. */
    maxPixels: number;
    /** Smallest accepted side; default 64 px. */
    minSide: number;
  };
  /** POST /api/verify, public (no API key): kept cheap for anyone who can reach the server. */
  verify: {
    /**
     * Largest body; default 16 MiB: an image (uploads allow 10 MiB) or a clip, of which only the first `maxFrames`
     * are decoded: a minute of the avatar's own 512-px output at 1.5 Mbit/s is ~11 MiB. Longer clips: cut them.
     */
    maxBytes: number;
    /** Largest image (w*h), read from its header and refused (413 IMAGE_TOO_LARGE) before decoding; default 40 Mpx. */
    maxPixels: number;
    /** Frames of a clip decoded at most (at 30 fps: one minute); default 1800. */
    maxFrames: number;
    /**
     * Requests per minute per client address (token bucket: a burst of this many, then one per 60/n s; 429
     * TOO_MANY_REQUESTS with Retry-After); default 10 (env AVATAR_VERIFY_PER_MINUTE).
     */
    perAddressPerMinute: number;
    /** Verifications running at once (each decodes on this machine's CPU); default 2. */
    maxConcurrent: number;
  };
  avatar: {
    /** Engine for new rooms: 'default' (model pack), 'portrait' (re-renders the portrait), 'passthrough' (diagnostic:
     * the driving picture unchanged; never the default). Default 'default'. */
    engine: 'default' | 'portrait' | 'passthrough';
    /** Model pack folder; default models/default. */
    modelPack: string;
    /**
     * Face tracker of the default engine: 'mesh' (MediaPipe FaceMesh + Iris as ONNX, Apache-2.0: lids, irises, inner
     * lips; the default) or 'dlib' (dlib's 68-point predictor, non-commercial training data). Default 'mesh'.
     */
    tracker: 'mesh' | 'dlib';
    /**
     * Learned refiner pack (models/refiner: expression encoder + few-step refiner) used by the default engine when
     * `steps` > 0; null = none. Default models/refiner.
     */
    refinerPack: string | null;
    /** Refiner steps for new rooms (0 = warp only); default 0. */
    steps: number;
    /**
     * Frame-time budget of the overload policy that lowers refiner steps before frames drop (stepsPolicy.ts), ms;
     * default 1000/30 (a 30 fps camera).
     */
    stepsBudgetMs: number;
    /** onnxruntime execution provider; default 'cpu' ('cuda' where a GPU is configured). */
    executionProvider: 'cpu' | 'cuda';
    /** ONNX intra-op threads; default 1 (video encoding shares the cores). */
    intraOpThreads: number;
    /** Output frame size (long side) of the synthesized video; default 512. */
    outputSize: number;
    /** Worker init deadline; default 30 s. */
    initTimeoutMs: number;
    /**
     * Avatar worker threads kept warm with the engine loaded, beyond the rooms' own (server/avatar/workerPool.ts): a
     * new room, or a room whose worker crashed, takes one instead of waiting for an engine to start. Workers of closed
     * rooms are reused. Default 1 (each costs the engine's memory, ~130 MB for the default pack); 0: none kept warm.
     */
    spareWorkers: number;
  };
  media: {
    /**
     * STUN/TURN servers given to clients (the join answer, WHIP/WHEP Link headers) and, with serverPeersUseIce, used by
     * the server's own peers; default none (host candidates only). Env AVATAR_ICE_SERVERS: comma-separated URLs, or a
     * JSON array of RTCIceServer objects. A TURN server with a fixed password goes here; coturn's shared secret goes in
     * `turn` (server/media/iceConfig.ts).
     */
    iceServers: IceServer[];
    /** TURN with time-limited credentials (coturn's shared-secret REST scheme); default none. */
    turn: TurnConfig;
    /**
     * The server's own wrtc peers (ingest, direct fan-out, WHIP/WHEP) gather through the ICE servers above too (a
     * server behind NAT: server-reflexive and relay candidates; each peer then holds a TURN allocation); default true
     * (env AVATAR_SERVER_PEERS_ICE=off: host candidates only, for a server with a public address).
     */
    serverPeersUseIce: boolean;
    /** Keep only ICE candidates whose address matches one of these (e.g. ['127.0.0.1'] in tests); default all. */
    iceAddressAllowList: string[] | null;
    /** Video bitrate cap per viewer, bits/s; default 1.5 Mbit/s. */
    maxVideoBitrate: number;
    /**
     * A viewer's server peer (WHEP, or a socket viewer on direct fan-out) that has not connected this long after its
     * offer was answered is closed and gives back its viewer slot: an offer never followed by ICE would otherwise hold
     * a peer and an encode (~12 MB each) until the room closes; default 30 s.
     */
    viewerConnectTimeoutMs: number;
    /** Extra audio delay added to the measured video latency, ms; default 0. */
    audioDelayOffsetMs: number;
  };
  fanout: {
    /** 'auto' (mediasoup if a worker starts, else direct), 'direct' or 'sfu'; default 'auto'. */
    mode: 'auto' | 'direct' | 'sfu';
    /** mediasoup worker binary; default mediasoup's own (env MEDIASOUP_WORKER_BIN, read by mediasoup itself). */
    mediasoupWorkerBin: string | null;
    /** Announced IP for mediasoup WebRTC transports; default null (listen IP). */
    announcedIp: string | null;
    /** mediasoup listen IP; default '127.0.0.1'. */
    listenIp: string;
    rtcMinPort: number;
    rtcMaxPort: number;
    /** mediasoup workers in this process; 0 = one per core (os.availableParallelism()); default 0 (env AVATAR_SFU_WORKERS). */
    workers: number;
    /**
     * Viewers one room's router takes before the room's producers are piped (router.pipeToRouter) to a router on
     * another worker, where further viewers consume; default 100 (env AVATAR_SFU_VIEWERS_PER_ROUTER).
     */
    viewersPerRouter: number;
  };
  cluster: {
    /**
     * Redis URL of the room directory (e.g. redis://127.0.0.1:6379); null = single process, no directory (the
     * `npm start` default). Env AVATAR_REDIS_URL.
     */
    redisUrl: string | null;
    /** This node's id in the directory; default: random per process (env AVATAR_NODE_ID). */
    nodeId: string;
    /**
     * Address of the internal listener: the node-to-node API (/internal/*, pipe set-up) is served there and only there
     * (the public port answers it 404). Default null: the same address as `host` (env AVATAR_INTERNAL_HOST). Bind it to
     * an address only the other nodes reach (a pod or private IP) and keep its port closed to the public.
     */
    internalHost: string | null;
    /** Port of the internal listener; 0 picks a free one; must differ from `port`; default 8081 (env AVATAR_INTERNAL_PORT). */
    internalPort: number;
    /**
     * URL other nodes use to reach this node's internal API (the internal listener), e.g. http://10.0.0.5:8081; default:
     * the internal listener's local URL (env AVATAR_NODE_URL).
     */
    nodeUrl: string | null;
    /**
     * This node's own address for clients another node sends here: where WHIP/WHEP redirect (307) for a room that lives
     * on this node, and what WRONG_NODE names, e.g. http://10.0.0.5:8080; default: the local listen URL (env
     * AVATAR_NODE_PUBLIC_URL).
     */
    nodePublicUrl: string | null;
    /**
     * The node URLs other nodes may call and WHIP/WHEP may redirect to (every node's AVATAR_NODE_URL and
     * AVATAR_NODE_PUBLIC_URL: a node record is accepted only when both of its URLs are listed); empty: any node record
     * signed with the shared secret (records planted in Redis without it are ignored either way). Default [] (env
     * AVATAR_NODE_URLS, comma-separated).
     */
    nodeUrls: string[];
    /** IP other nodes' mediasoup pipe transports send to (this host's address); default fanout.listenIp (env AVATAR_PIPE_ANNOUNCED_IP). */
    pipeAnnouncedIp: string | null;
    /** Heartbeat period of this node's directory entries, ms; default 2000. */
    heartbeatMs: number;
    /** Directory entries expire this long after the last heartbeat (node loss), ms; default 6000. */
    ttlMs: number;
  };
  /** The visible mark, the watermark and the signing key (server/provenance/config.ts documents each option). */
  provenance: ProvenanceConfig;
}

/** The repository (or image) root: where package.json, client/ and models/ are, from source or from dist/. */
export const projectRoot = packageInfo().root;

export function defaultConfig(): Config {
  return {
    host: '127.0.0.1',
    port: 8080,
    publicUrl: null,
    logLevel: 'info',
    dataDir: path.join(projectRoot, 'data'),
    tokenSecret: randomBytes(32).toString('hex'),
    tokenTtlMs: 12 * 3600_000,
    roomGraceMs: 30_000,
    roomIdleMs: 600_000,
    maxRooms: 50,
    auth: {
      apiKeys: [],
      perKeyPerMinute: 600,
      perAddressPerMinute: 300,
      signInPerMinute: 10,
      modelDownloadsPerMinute: 60,
    },
    quotas: {
      roomsPerKey: 10,
      portraitsPerKey: 100,
      bytesPerKey: 1024 * 1024 * 1024,
      viewersPerRoom: 200,
      viewersPerLink: 200,
    },
    signaling: { connectionsPerAddressPerMinute: 300, joinTimeoutMs: 10_000 },
    whip: { perAddressPerMinute: 120 },
    consent: {
      version: '2026-11-27',
      text:
        'I have the right to animate the person in this picture: it is me, or I have their permission (or the right ' +
        'to use the artwork). I will not use the avatar to deceive people about who is speaking. The output is marked ' +
        'as synthetic and may be traced to this upload.',
    },
    upload: { maxBytes: 10 * 1024 * 1024, maxPixels: 40_000_000, minSide: 64 },
    verify: {
      maxBytes: 16 * 1024 * 1024,
      maxPixels: 40_000_000,
      maxFrames: 1800,
      perAddressPerMinute: 10,
      maxConcurrent: 2,
    },
    avatar: {
      engine: 'default',
      modelPack: path.join(projectRoot, 'models', 'default'),
      tracker: 'mesh',
      refinerPack: path.join(projectRoot, 'models', 'refiner'),
      steps: 0,
      stepsBudgetMs: 1000 / 30,
      executionProvider: 'cpu',
      intraOpThreads: 1,
      outputSize: 512,
      initTimeoutMs: 30_000,
      spareWorkers: 1,
    },
    media: {
      iceServers: [],
      turn: defaultTurnConfig(),
      serverPeersUseIce: true,
      iceAddressAllowList: null,
      maxVideoBitrate: 1_500_000,
      viewerConnectTimeoutMs: 30_000,
      audioDelayOffsetMs: 0,
    },
    fanout: {
      mode: 'auto',
      mediasoupWorkerBin: null,
      announcedIp: null,
      listenIp: '127.0.0.1',
      rtcMinPort: 40000,
      rtcMaxPort: 49999,
      workers: 0,
      viewersPerRouter: 100,
    },
    cluster: {
      redisUrl: null,
      nodeId: randomBytes(6).toString('hex'),
      internalHost: null,
      internalPort: 8081,
      nodeUrl: null,
      nodePublicUrl: null,
      nodeUrls: [],
      pipeAnnouncedIp: null,
      heartbeatMs: 2000,
      ttlMs: 6000,
    },
    provenance: defaultProvenanceConfig(),
  };
}

export type DeepPartial<T> = {
  [K in keyof T]?: T[K] extends object ? (T[K] extends unknown[] ? T[K] : DeepPartial<T[K]>) : T[K];
};

function fail(message: string): never {
  throw new AppError('CONFIG_INVALID', `config: ${message}`);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Deep-merges `over` into `base`, refusing unknown keys and values of the wrong type. */
function merge<T extends Record<string, unknown>>(base: T, over: unknown, where: string): T {
  if (!isRecord(over)) fail(`${where || 'root'} must be an object`);
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const key = where ? `${where}.${k}` : k;
    if (!(k in base)) fail(`unknown option "${key}"`);
    const cur = base[k];
    if (isRecord(cur)) out[k] = merge(cur, v, key);
    else if (cur === null || v === null) out[k] = v;
    else if (Array.isArray(cur)) {
      if (!Array.isArray(v)) fail(`"${key}" must be an array`);
      out[k] = v;
    } else if (typeof v !== typeof cur) fail(`"${key}" must be a ${typeof cur}`);
    else out[k] = v;
  }
  return out as T;
}

function intIn(v: number, lo: number, hi: number, key: string): void {
  if (!Number.isInteger(v) || v < lo || v > hi) fail(`"${key}" must be an integer in ${lo}..${hi} (got ${v})`);
}

/** Checks ranges and enums; throws AppError('CONFIG_INVALID') naming the option. */
export function validateConfig(c: Config): Config {
  intIn(c.port, 0, 65535, 'port');
  if (!['debug', 'info', 'warn', 'error', 'silent'].includes(c.logLevel))
    fail(`"logLevel" must be debug|info|warn|error|silent`);
  if (c.tokenSecret.length < 16) fail('"tokenSecret" must be at least 16 characters');
  intIn(c.tokenTtlMs, 1000, 30 * 24 * 3600_000, 'tokenTtlMs');
  intIn(c.roomGraceMs, 0, 3600_000, 'roomGraceMs');
  intIn(c.roomIdleMs, 1000, 24 * 3600_000, 'roomIdleMs');
  intIn(c.maxRooms, 1, 100_000, 'maxRooms');
  intIn(c.auth.perKeyPerMinute, 1, 1_000_000, 'auth.perKeyPerMinute');
  intIn(c.auth.perAddressPerMinute, 1, 1_000_000, 'auth.perAddressPerMinute');
  intIn(c.auth.signInPerMinute, 1, 1_000_000, 'auth.signInPerMinute');
  intIn(c.auth.modelDownloadsPerMinute, 1, 1_000_000, 'auth.modelDownloadsPerMinute');
  for (const k of c.auth.apiKeys) {
    if (!isRecord(k) || typeof k.name !== 'string' || !/^[A-Za-z0-9_.@-]{1,64}$/.test(k.name))
      fail('"auth.apiKeys" entries need a name (letters, digits, _ . @ -)');
    if (typeof k.secret !== 'string' || k.secret.length < 16 || /\s/.test(k.secret))
      fail(`API key "${k.name}" needs a secret of at least 16 characters without spaces`);
  }
  if (new Set(c.auth.apiKeys.map((k) => k.name)).size !== c.auth.apiKeys.length)
    fail('"auth.apiKeys" names must be unique');
  intIn(c.quotas.roomsPerKey, 1, 100_000, 'quotas.roomsPerKey');
  intIn(c.quotas.portraitsPerKey, 1, 10_000_000, 'quotas.portraitsPerKey');
  intIn(c.quotas.bytesPerKey, 1024, Number.MAX_SAFE_INTEGER, 'quotas.bytesPerKey');
  intIn(c.quotas.viewersPerRoom, 1, 1_000_000, 'quotas.viewersPerRoom');
  intIn(c.quotas.viewersPerLink, 1, 1_000_000, 'quotas.viewersPerLink');
  intIn(c.signaling.connectionsPerAddressPerMinute, 1, 1_000_000, 'signaling.connectionsPerAddressPerMinute');
  intIn(c.signaling.joinTimeoutMs, 100, 600_000, 'signaling.joinTimeoutMs');
  intIn(c.whip.perAddressPerMinute, 1, 1_000_000, 'whip.perAddressPerMinute');
  if (typeof c.consent.text !== 'string' || c.consent.text.length < 10) fail('"consent.text" must be the consent text');
  if (typeof c.consent.version !== 'string' || !/^[A-Za-z0-9._-]{1,40}$/.test(c.consent.version))
    fail('"consent.version" must be 1-40 letters, digits, . _ -');
  intIn(c.upload.maxBytes, 1024, 200 * 1024 * 1024, 'upload.maxBytes');
  intIn(c.upload.maxPixels, 4096, 400_000_000, 'upload.maxPixels');
  intIn(c.upload.minSide, 1, 4096, 'upload.minSide');
  intIn(c.verify.maxBytes, 1024, 1024 * 1024 * 1024, 'verify.maxBytes');
  intIn(c.verify.maxPixels, 4096, 268_402_689, 'verify.maxPixels');
  intIn(c.verify.maxFrames, 1, 1_000_000, 'verify.maxFrames');
  intIn(c.verify.perAddressPerMinute, 1, 1_000_000, 'verify.perAddressPerMinute');
  intIn(c.verify.maxConcurrent, 1, 256, 'verify.maxConcurrent');
  if (!['default', 'portrait', 'passthrough'].includes(c.avatar.engine))
    fail('"avatar.engine" must be default|portrait|passthrough');
  if (!['mesh', 'dlib'].includes(c.avatar.tracker)) fail('"avatar.tracker" must be mesh|dlib');
  if (!['cpu', 'cuda'].includes(c.avatar.executionProvider)) fail('"avatar.executionProvider" must be cpu|cuda');
  intIn(c.avatar.intraOpThreads, 1, 64, 'avatar.intraOpThreads');
  intIn(c.avatar.spareWorkers, 0, 64, 'avatar.spareWorkers');
  intIn(c.avatar.outputSize, 64, 2048, 'avatar.outputSize');
  intIn(c.avatar.steps, 0, 8, 'avatar.steps');
  if (!(
    typeof c.avatar.stepsBudgetMs === 'number' &&
    c.avatar.stepsBudgetMs >= 5 &&
    c.avatar.stepsBudgetMs <= 10_000
  )) {
    fail('"avatar.stepsBudgetMs" must be a number of ms in 5..10000');
  }
  if (c.avatar.outputSize % 2 !== 0) fail('"avatar.outputSize" must be even');
  intIn(c.avatar.initTimeoutMs, 100, 600_000, 'avatar.initTimeoutMs');
  validateIceConfig(c.media, fail);
  intIn(c.media.maxVideoBitrate, 50_000, 50_000_000, 'media.maxVideoBitrate');
  intIn(c.media.viewerConnectTimeoutMs, 100, 600_000, 'media.viewerConnectTimeoutMs');
  intIn(c.media.audioDelayOffsetMs, -1000, 5000, 'media.audioDelayOffsetMs');
  if (!['auto', 'direct', 'sfu'].includes(c.fanout.mode)) fail('"fanout.mode" must be auto|direct|sfu');
  intIn(c.fanout.rtcMinPort, 1024, 65535, 'fanout.rtcMinPort');
  intIn(c.fanout.rtcMaxPort, c.fanout.rtcMinPort, 65535, 'fanout.rtcMaxPort');
  intIn(c.fanout.workers, 0, 256, 'fanout.workers');
  intIn(c.fanout.viewersPerRouter, 1, 100_000, 'fanout.viewersPerRouter');
  if (c.cluster.redisUrl !== null && !/^rediss?:\/\/[^\s]+$/.test(c.cluster.redisUrl))
    fail('"cluster.redisUrl" must be a redis:// URL');
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(c.cluster.nodeId)) fail('"cluster.nodeId" must be 1-64 letters, digits, _ or -');
  if (c.cluster.nodeUrl !== null && !/^https?:\/\/[^\s]+$/.test(c.cluster.nodeUrl))
    fail('"cluster.nodeUrl" must be an http(s) URL');
  if (c.cluster.nodePublicUrl !== null && !/^https?:\/\/[^\s]+$/.test(c.cluster.nodePublicUrl))
    fail('"cluster.nodePublicUrl" must be an http(s) URL');
  intIn(c.cluster.internalPort, 0, 65535, 'cluster.internalPort');
  if (c.cluster.redisUrl !== null && c.cluster.internalPort !== 0 && c.cluster.internalPort === c.port)
    fail('"cluster.internalPort" must differ from "port" (the internal API has its own listener)');
  if (c.cluster.internalHost !== null && (typeof c.cluster.internalHost !== 'string' || !c.cluster.internalHost))
    fail('"cluster.internalHost" must be an address (or null: the same as "host")');
  for (const u of c.cluster.nodeUrls)
    if (typeof u !== 'string' || !/^https?:\/\/[^\s]+$/.test(u)) fail('"cluster.nodeUrls" must be http(s) URLs');
  intIn(c.cluster.heartbeatMs, 100, 60_000, 'cluster.heartbeatMs');
  intIn(c.cluster.ttlMs, c.cluster.heartbeatMs * 2, 600_000, 'cluster.ttlMs');
  validateProvenanceConfig(c.provenance, fail);
  return c;
}

/**
 * Quotas and rate limits settable from the environment (integers; the config's validation checks their ranges), each
 * with the option it sets (named, for the README and its test).
 */
export const LIMIT_ENV: readonly (readonly [env: string, option: string, set: (c: Config, v: number) => void])[] = [
  ['AVATAR_MAX_ROOMS', 'maxRooms', (c, v) => (c.maxRooms = v)],
  ['AVATAR_ROOMS_PER_KEY', 'quotas.roomsPerKey', (c, v) => (c.quotas.roomsPerKey = v)],
  ['AVATAR_PORTRAITS_PER_KEY', 'quotas.portraitsPerKey', (c, v) => (c.quotas.portraitsPerKey = v)],
  ['AVATAR_BYTES_PER_KEY', 'quotas.bytesPerKey', (c, v) => (c.quotas.bytesPerKey = v)],
  ['AVATAR_VIEWERS_PER_ROOM', 'quotas.viewersPerRoom', (c, v) => (c.quotas.viewersPerRoom = v)],
  ['AVATAR_VIEWERS_PER_LINK', 'quotas.viewersPerLink', (c, v) => (c.quotas.viewersPerLink = v)],
  ['AVATAR_API_PER_KEY_PER_MINUTE', 'auth.perKeyPerMinute', (c, v) => (c.auth.perKeyPerMinute = v)],
  ['AVATAR_API_PER_ADDRESS_PER_MINUTE', 'auth.perAddressPerMinute', (c, v) => (c.auth.perAddressPerMinute = v)],
  ['AVATAR_SIGNIN_PER_MINUTE', 'auth.signInPerMinute', (c, v) => (c.auth.signInPerMinute = v)],
  ['AVATAR_MODEL_DOWNLOADS_PER_MINUTE', 'auth.modelDownloadsPerMinute', (c, v) => (c.auth.modelDownloadsPerMinute = v)],
  ['AVATAR_WHIP_PER_MINUTE', 'whip.perAddressPerMinute', (c, v) => (c.whip.perAddressPerMinute = v)],
  [
    'AVATAR_CONNECTIONS_PER_MINUTE',
    'signaling.connectionsPerAddressPerMinute',
    (c, v) => (c.signaling.connectionsPerAddressPerMinute = v),
  ],
  ['AVATAR_JOIN_TIMEOUT_MS', 'signaling.joinTimeoutMs', (c, v) => (c.signaling.joinTimeoutMs = v)],
  ['AVATAR_VIEWER_CONNECT_TIMEOUT_MS', 'media.viewerConnectTimeoutMs', (c, v) => (c.media.viewerConnectTimeoutMs = v)],
];

/** Builds the config from defaults, an optional overrides object (tests), a JSON file and env. */
export function loadConfig(env: Record<string, string | undefined> = {}, overrides: DeepPartial<Config> = {}): Config {
  let c: Config = defaultConfig();
  const generatedSecret = c.tokenSecret;
  const file = env.AVATAR_CONFIG;
  if (file) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new AppError('CONFIG_INVALID', `config: cannot read ${file}`, { cause: err });
    }
    c = merge(c as unknown as Record<string, unknown>, parsed, '') as unknown as Config;
  }
  const num = (k: string): number | undefined => {
    const v = env[k];
    if (v === undefined || v === '') return undefined;
    const n = Number(v);
    if (!Number.isFinite(n)) fail(`env ${k} must be a number (got "${v}")`);
    return n;
  };
  c.port = num('PORT') ?? c.port;
  if (env.HOST) c.host = env.HOST;
  if (env.PUBLIC_URL) c.publicUrl = env.PUBLIC_URL;
  if (env.LOG_LEVEL) c.logLevel = env.LOG_LEVEL as LogLevel;
  if (env.AVATAR_DATA_DIR) c.dataDir = path.resolve(env.AVATAR_DATA_DIR);
  if (env.AVATAR_TOKEN_SECRET) c.tokenSecret = env.AVATAR_TOKEN_SECRET;
  if (env.AVATAR_API_KEYS) c.auth.apiKeys = parseApiKeys(env.AVATAR_API_KEYS);
  c.verify.perAddressPerMinute = num('AVATAR_VERIFY_PER_MINUTE') ?? c.verify.perAddressPerMinute;
  for (const [name, , set] of LIMIT_ENV) {
    const v = num(name);
    if (v !== undefined) set(c, v);
  }
  const linkHours = num('AVATAR_LINK_TTL_HOURS');
  if (linkHours !== undefined) c.tokenTtlMs = Math.round(linkHours * 3600_000);
  if (env.AVATAR_ENGINE) c.avatar.engine = env.AVATAR_ENGINE as Config['avatar']['engine'];
  if (env.AVATAR_TRACKER) c.avatar.tracker = env.AVATAR_TRACKER as Config['avatar']['tracker'];
  if (env.AVATAR_MODEL_PACK) c.avatar.modelPack = path.resolve(env.AVATAR_MODEL_PACK);
  if (env.AVATAR_REFINER_PACK)
    c.avatar.refinerPack = env.AVATAR_REFINER_PACK === 'none' ? null : path.resolve(env.AVATAR_REFINER_PACK);
  if (env.AVATAR_STEPS) c.avatar.steps = Number(env.AVATAR_STEPS);
  if (env.AVATAR_SPARE_WORKERS) c.avatar.spareWorkers = Number(env.AVATAR_SPARE_WORKERS);
  if (env.AVATAR_EP) c.avatar.executionProvider = env.AVATAR_EP as Config['avatar']['executionProvider'];
  if (env.FANOUT) c.fanout.mode = env.FANOUT as Config['fanout']['mode'];
  if (env.MEDIASOUP_WORKER_BIN) c.fanout.mediasoupWorkerBin = env.MEDIASOUP_WORKER_BIN;
  if (env.MEDIASOUP_ANNOUNCED_IP) c.fanout.announcedIp = env.MEDIASOUP_ANNOUNCED_IP;
  if (env.MEDIASOUP_LISTEN_IP) c.fanout.listenIp = env.MEDIASOUP_LISTEN_IP;
  c.fanout.rtcMinPort = num('AVATAR_RTC_MIN_PORT') ?? c.fanout.rtcMinPort;
  c.fanout.rtcMaxPort = num('AVATAR_RTC_MAX_PORT') ?? c.fanout.rtcMaxPort;
  c.fanout.workers = num('AVATAR_SFU_WORKERS') ?? c.fanout.workers;
  c.fanout.viewersPerRouter = num('AVATAR_SFU_VIEWERS_PER_ROUTER') ?? c.fanout.viewersPerRouter;
  if (env.AVATAR_REDIS_URL) c.cluster.redisUrl = env.AVATAR_REDIS_URL;
  if (env.AVATAR_NODE_ID) c.cluster.nodeId = env.AVATAR_NODE_ID;
  if (env.AVATAR_INTERNAL_HOST) c.cluster.internalHost = env.AVATAR_INTERNAL_HOST;
  c.cluster.internalPort = num('AVATAR_INTERNAL_PORT') ?? c.cluster.internalPort;
  if (env.AVATAR_NODE_URL) c.cluster.nodeUrl = env.AVATAR_NODE_URL;
  if (env.AVATAR_NODE_PUBLIC_URL) c.cluster.nodePublicUrl = env.AVATAR_NODE_PUBLIC_URL;
  if (env.AVATAR_NODE_URLS) c.cluster.nodeUrls = env.AVATAR_NODE_URLS.split(',').map((u) => u.trim());
  if (env.AVATAR_PIPE_ANNOUNCED_IP) c.cluster.pipeAnnouncedIp = env.AVATAR_PIPE_ANNOUNCED_IP;
  applyIceEnv(c.media, env, fail);
  applyProvenanceEnv(c.provenance, env, (f) => path.resolve(f), fail);
  c = merge(c as unknown as Record<string, unknown>, overrides, '') as unknown as Config;
  if (c.cluster.redisUrl !== null && c.tokenSecret === generatedSecret) {
    // Each node would sign links with its own random secret: a viewer's link would work on one node only.
    fail('"cluster.redisUrl" needs a "tokenSecret" shared by every node (set AVATAR_TOKEN_SECRET)');
  }
  return validateConfig(c);
}
