/**
 * The server: one uWebSockets.js app serving the client pages, the REST API, /healthz, /metrics and socket.io
 * signaling (attached with io.attachApp); a node of a cluster also listens on a second, internal address
 * (config.cluster.internalHost/internalPort) for the node-to-node API (/internal/*), which the public port answers 404. `createServer()` builds and starts everything; one ordered teardown
 * (`teardown()`: signaling, cluster, rooms, avatar workers, WHIP, metrics, socket.io, the listen socket, the fan-out
 * factory, the face checker, the portrait store) serves `close()`, the signals of `npm start` (main.ts calls close())
 * and a start-up that fails at any step, and frees the port.
 */
import path from 'node:path';
import { Server } from 'socket.io';
import uWS from 'uWebSockets.js';
import { projectRoot, type Config } from './config.js';
import { AppError } from './errors.js';
import { dispatch, type Handler } from './http/exchange.js';
import { addApiRoutes } from './http/api.js';
import { addWhipRoutes, type WhipSessions } from './http/whip.js';
import { addVerifyRoutes } from './http/verify.js';
import { Router } from './http/router.js';
import { createLogger, setLogLevel, type Logger } from './logger.js';
import { ApiKeys, loadOrCreateOperatorKey } from './auth/apiKeys.js';
import type { ClusterNode } from './cluster/node.js';
import { createFanoutFactory } from './media/fanout.js';
import { type FanoutFactory } from './media/fanoutTypes.js';
import { Metrics } from './metrics.js';
import { PortraitStore, type FaceCheck } from './portraits/store.js';
import { FaceChecker } from './portraits/faceCheck.js';
import { RoomRegistry } from './rooms/registry.js';
import { AvatarWorkerPool } from './avatar/workerPool.js';
import { SignalingServer, type SignalingIo } from './signaling/server.js';

export interface ServerOptions {
  /** Refuses portraits without a face (AppError('NO_FACE')). Default: with the 'default' engine, the project's face
   * detector in a worker thread; with the 'portrait' and 'passthrough' engines, no check. */
  checkFace?: FaceCheck;
  /** Folder with the client pages; default <project>/client. */
  clientDir?: string;
  /** Folder of the face models served to the browser's tracker (GET /models/face/*); default <project>/models/face. */
  faceModelDir?: string;
}

export interface AvatarServer {
  /** The port actually listened on (config.port 0 picks one). */
  readonly port: number;
  /** A URL that reaches the server from this machine, e.g. http://127.0.0.1:8080. */
  readonly url: string;
  readonly config: Config;
  readonly portraits: PortraitStore;
  readonly rooms: RoomRegistry;
  readonly metrics: Metrics;
  readonly fanout: FanoutFactory;
  /** The avatar workers shared by the rooms (warm spares, workers of closed rooms kept for the next). */
  readonly workers: AvatarWorkerPool;
  /**
   * The local operator's API key when no key is configured (kept in <dataDir>/operator-key), else null. `npm start`
   * prints a studio link with it.
   */
  readonly operatorKey: string | null;
  /** This node of a multi-node deployment (config.cluster.redisUrl), else null. */
  readonly cluster: ClusterNode | null;
  /** A cluster node's internal listener (the node-to-node API), from this machine, e.g. http://127.0.0.1:8081; else null. */
  readonly internalUrl: string | null;
  readonly closed: boolean;
  /** Closes rooms, signaling, the listen socket and the fan-out factory. Idempotent; the port is free afterwards. */
  close(): Promise<void>;
}

function localUrl(host: string, port: number): string {
  if (host === '0.0.0.0' || host === '') return `http://127.0.0.1:${port}`;
  if (host === '::') return `http://[::1]:${port}`;
  return host.includes(':') ? `http://[${host}]:${port}` : `http://${host}:${port}`;
}

/**
 * What the server holds, in the order it is taken down (each present once it exists). One teardown (`teardown()`)
 * closes it on every path: close() (stop, and the signals of `npm start`), and a start-up that fails at any step.
 */
interface Held {
  signaling?: SignalingServer;
  cluster?: ClusterNode | null;
  registry?: RoomRegistry;
  workers?: AvatarWorkerPool;
  whip?: WhipSessions;
  metrics?: Metrics;
  io?: SignalingIo;
  listenSocket?: uWS.us_listen_socket;
  internalSocket?: uWS.us_listen_socket;
  fanout?: FanoutFactory;
  faceChecker?: FaceChecker | null;
  portraits?: PortraitStore;
}

/**
 * Takes down what `held` has, in order: signaling stops taking requests; the cluster node leaves the directory and
 * closes its relays (before the rooms, so that this node's entries go at once); the registry closes the rooms (each
 * closes its peers, fan-outs, publisher and avatar session); the worker pool closes its threads once the rooms'
 * workers came back; then WHIP/WHEP sessions, metrics, socket.io, the listen sockets, the fan-out factory (mediasoup
 * workers), the face checker's thread, and last the portrait store's pending writes. A step that fails is logged and
 * the next one still runs; the first error is thrown at the end.
 */
async function teardown(held: Held, log: Logger): Promise<void> {
  const steps: [string, () => unknown][] = [
    ['signaling', () => held.signaling?.close()],
    ['cluster', () => held.cluster?.close()],
    ['rooms', () => held.registry?.close()],
    ['avatar workers', () => held.workers?.close()],
    ['whip', () => held.whip?.close()],
    ['metrics', () => held.metrics?.close()],
    ['socket.io', () => held.io?.close()],
    ['listen socket', () => held.listenSocket && uWS.us_listen_socket_close(held.listenSocket)],
    ['internal listen socket', () => held.internalSocket && uWS.us_listen_socket_close(held.internalSocket)],
    ['fan-out', () => held.fanout?.close()],
    ['face checker', () => held.faceChecker?.close()],
    ['portrait store', () => held.portraits?.flush()],
  ];
  let first: Error | null = null;
  for (const [name, step] of steps) {
    try {
      await step();
    } catch (err) {
      log.error('close step failed', { step: name, err: err as Error });
      first ??= err instanceof Error ? err : new Error(String(err));
    }
  }
  if (first) throw first;
}

/** Builds the server from a validated config and starts listening. */
export async function createServer(config: Config, opts: ServerOptions = {}): Promise<AvatarServer> {
  setLogLevel(config.logLevel);
  const log = createLogger('server');
  const held: Held = {};
  try {
    return await start(config, opts, held, log);
  } catch (err) {
    await teardown(held, log).catch(() => {
      // Logged step by step by teardown(); the start-up error is the one to report.
    });
    throw err;
  }
}

async function start(config: Config, opts: ServerOptions, held: Held, log: Logger): Promise<AvatarServer> {
  const startedAt = Date.now();
  const fanout = (held.fanout = await createFanoutFactory(config, log.child('fanout')));
  // The default engine animates a face: refuse a portrait without one at upload, not with a frozen stream later.
  const faceChecker = (held.faceChecker =
    !opts.checkFace && config.avatar.engine === 'default' ? new FaceChecker(log.child('faces')) : null);
  const checkFace: FaceCheck | undefined =
    opts.checkFace ?? (faceChecker ? (rgb) => faceChecker.check(rgb) : undefined);
  // API keys: the configured ones, else the local operator's (created once in the data folder).
  let operatorKey: string | null = null;
  let keys: ApiKeys;
  const configured = config.auth.apiKeys;
  if (configured.length === 0) {
    const k = await loadOrCreateOperatorKey(config.dataDir);
    operatorKey = k.secret;
    keys = new ApiKeys([k]);
  } else {
    keys = new ApiKeys(configured);
  }
  const portraits = (held.portraits = await PortraitStore.open({
    consent: config.consent,
    dir: path.join(config.dataDir, 'portraits'),
    maxBytes: config.upload.maxBytes,
    maxPixels: config.upload.maxPixels,
    minSide: config.upload.minSide,
    quota: { portraits: config.quotas.portraitsPerKey, bytes: config.quotas.bytesPerKey },
    ...(checkFace ? { checkFace } : {}),
    log: log.child('portraits'),
  }));
  // Avatar workers with the engine loaded, shared by the rooms: a spare for a new room or a crashed worker, and the
  // workers of closed rooms reused (engine threads created and ended per room left native memory behind).
  const workers = (held.workers = new AvatarWorkerPool({
    spares: config.avatar.spareWorkers,
    maxIdle: config.maxRooms,
    initTimeoutMs: config.avatar.initTimeoutMs,
    log: log.child('workers'),
  }));
  const registry = (held.registry = new RoomRegistry({ config, fanout, portraits, workers, log: log.child('rooms') }));
  const metrics = (held.metrics = new Metrics(registry));

  const app = uWS.App();
  const io: SignalingIo = (held.io = new Server({ serveClient: false, maxHttpBufferSize: 256 * 1024 }));
  io.attachApp(app);
  let port = 0;
  let internalPort = 0;
  const internalHost = config.cluster.internalHost ?? config.host;
  // A node of a multi-node deployment (cluster.redisUrl); `npm start` without it never loads the cluster code.
  let cluster: ClusterNode | null = null;
  if (config.cluster.redisUrl) {
    const { ClusterNode: Node } = await import('./cluster/node.js');
    cluster = held.cluster = await Node.create({
      config,
      registry,
      fanout,
      log: log.child('cluster'),
      url: () => config.cluster.nodePublicUrl ?? localUrl(config.host, port),
      internalUrl: () => config.cluster.nodeUrl ?? localUrl(internalHost, internalPort),
    });
  }
  held.signaling = new SignalingServer({ io, registry, config, log: log.child('signaling'), cluster });

  let closing: Promise<void> | null = null;
  const router = new Router<Handler>();
  addApiRoutes(router, {
    config,
    portraits,
    registry,
    metrics,
    fanoutKind: () => fanout.kind,
    clientDir: opts.clientDir ?? path.join(projectRoot, 'client'),
    faceModelDir: opts.faceModelDir ?? path.join(projectRoot, 'models', 'face'),
    startedAt,
    port: () => port,
    keys,
    sfuWorkers: () => fanout.workers().length,
    ready: () => closing === null,
  });
  held.whip = addWhipRoutes(router, { config, registry, log: log.child('whip'), port: () => port, cluster });
  addVerifyRoutes(router, { config, log: log.child('verify') });
  const httpLog = log.child('http');
  app.any('/*', (res, req) => dispatch(router, res, req, httpLog));

  const listenSocket = await new Promise<uWS.us_listen_socket | false>((resolve) =>
    app.listen(config.host, config.port, resolve),
  );
  if (!listenSocket)
    throw new AppError('CONFIG_INVALID', `cannot listen on ${config.host}:${config.port} (in use or not permitted)`);
  held.listenSocket = listenSocket;
  port = uWS.us_socket_local_port(listenSocket);
  const url = localUrl(config.host, port);
  log.info('listening', { url, fanout: fanout.kind, engine: config.avatar.engine });
  let internalUrl: string | null = null;
  if (cluster) {
    // The node-to-node API on its own listener: a firewall or NetworkPolicy can keep its port to the other nodes,
    // and nothing that reaches the public port (a proxy's forgotten route included) reaches it.
    const internalApp = uWS.App();
    const internalRouter = new Router<Handler>();
    cluster.addRoutes(internalRouter);
    const internalLog = log.child('internal');
    internalApp.any('/*', (res, req) => dispatch(internalRouter, res, req, internalLog));
    const socket = await new Promise<uWS.us_listen_socket | false>((resolve) =>
      internalApp.listen(internalHost, config.cluster.internalPort, resolve),
    );
    if (!socket)
      throw new AppError(
        'CONFIG_INVALID',
        `cannot listen on ${internalHost}:${config.cluster.internalPort} for the internal API (cluster.internalPort: in use or not permitted)`,
      );
    held.internalSocket = socket;
    internalPort = uWS.us_socket_local_port(socket);
    internalUrl = localUrl(internalHost, internalPort);
    log.info('internal API listening', { url: internalUrl });
  }
  await cluster?.start();

  return {
    port,
    url,
    config,
    portraits,
    rooms: registry,
    metrics,
    fanout,
    workers,
    cluster,
    internalUrl,
    operatorKey,
    get closed() {
      return closing !== null;
    },
    close() {
      closing ??= teardown(held, log).then(() => log.info('closed'));
      return closing;
    },
  };
}
