/**
 * The server: one uWebSockets.js app serving the client pages, the REST API, /healthz, /metrics and socket.io
 * signaling (attached with io.attachApp). `createServer()` builds and starts everything; `close()` takes it all down
 * in order (signaling, rooms, socket.io, the listen socket, the fan-out factory) and frees the port.
 */
import path from 'node:path';
import { Server } from 'socket.io';
import uWS from 'uWebSockets.js';
import { projectRoot, type Config } from './config.js';
import { AppError } from './errors.js';
import { dispatch, type Handler } from './http/exchange.js';
import { addApiRoutes } from './http/api.js';
import { addWhipRoutes } from './http/whip.js';
import { addVerifyRoutes } from './http/verify.js';
import { Router } from './http/router.js';
import { createLogger, setLogLevel } from './logger.js';
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
  readonly closed: boolean;
  /** Closes rooms, signaling, the listen socket and the fan-out factory. Idempotent; the port is free afterwards. */
  close(): Promise<void>;
}

function localUrl(host: string, port: number): string {
  if (host === '0.0.0.0' || host === '') return `http://127.0.0.1:${port}`;
  if (host === '::') return `http://[::1]:${port}`;
  return host.includes(':') ? `http://[${host}]:${port}` : `http://${host}:${port}`;
}

/** Builds the server from a validated config and starts listening. */
export async function createServer(config: Config, opts: ServerOptions = {}): Promise<AvatarServer> {
  setLogLevel(config.logLevel);
  const log = createLogger('server');
  const startedAt = Date.now();
  const fanout = await createFanoutFactory(config, log.child('fanout'));
  // The default engine animates a face: refuse a portrait without one at upload, not with a frozen stream later.
  const faceChecker = !opts.checkFace && config.avatar.engine === 'default' ? new FaceChecker(log.child('faces')) : null;
  const checkFace: FaceCheck | undefined = opts.checkFace ?? (faceChecker ? (rgb) => faceChecker.check(rgb) : undefined);
  let portraits: PortraitStore;
  // API keys: the configured ones, else the local operator's (created once in the data folder).
  let operatorKey: string | null = null;
  let keys: ApiKeys;
  try {
    const configured = config.auth.apiKeys;
    if (configured.length === 0) {
      const k = await loadOrCreateOperatorKey(config.dataDir);
      operatorKey = k.secret;
      keys = new ApiKeys([k]);
    } else {
      keys = new ApiKeys(configured);
    }
    portraits = await PortraitStore.open({
      consent: config.consent,
      dir: path.join(config.dataDir, 'portraits'),
      maxBytes: config.upload.maxBytes,
      maxPixels: config.upload.maxPixels,
      minSide: config.upload.minSide,
      ...(checkFace ? { checkFace } : {}),
      log: log.child('portraits'),
    });
  } catch (err) {
    await faceChecker?.close();
    await fanout.close();
    throw err;
  }
  // Avatar workers with the engine loaded, shared by the rooms: a spare for a new room or a crashed worker, and the
  // workers of closed rooms reused (engine threads created and ended per room left native memory behind).
  const workers = new AvatarWorkerPool({
    spares: config.avatar.spareWorkers,
    maxIdle: config.maxRooms,
    initTimeoutMs: config.avatar.initTimeoutMs,
    log: log.child('workers'),
  });
  const registry = new RoomRegistry({ config, fanout, portraits, workers, log: log.child('rooms') });
  const metrics = new Metrics(registry);

  const app = uWS.App();
  const io: SignalingIo = new Server({ serveClient: false, maxHttpBufferSize: 256 * 1024 });
  io.attachApp(app);
  let port = 0;
  // A node of a multi-node deployment (cluster.redisUrl); `npm start` without it never loads the cluster code.
  let cluster: ClusterNode | null = null;
  if (config.cluster.redisUrl) {
    const { ClusterNode: Node } = await import('./cluster/node.js');
    try {
      cluster = await Node.create({
        config,
        registry,
        fanout,
        log: log.child('cluster'),
        url: () => config.cluster.nodeUrl ?? localUrl(config.host, port),
      });
    } catch (err) {
      metrics.close();
      registry.close();
      await workers.close();
      await faceChecker?.close();
      await fanout.close();
      throw err;
    }
  }
  const signaling = new SignalingServer({ io, registry, config, log: log.child('signaling'), cluster });

  const router = new Router<Handler>();
  addApiRoutes(router, {
    config,
    portraits,
    registry,
    metrics,
    fanoutKind: () => fanout.kind,
    clientDir: opts.clientDir ?? path.join(projectRoot, 'client'),
    startedAt,
    port: () => port,
    keys,
    sfuWorkers: () => fanout.workers().length,
  });
  const whip = addWhipRoutes(router, { config, registry, log: log.child('whip'), port: () => port, cluster });
  addVerifyRoutes(router, { config, log: log.child('verify') });
  cluster?.addRoutes(router);
  const httpLog = log.child('http');
  app.any('/*', (res, req) => dispatch(router, res, req, httpLog));

  const listenSocket = await new Promise<uWS.us_listen_socket | false>((resolve) => app.listen(config.host, config.port, resolve));
  if (!listenSocket) {
    signaling.close();
    await cluster?.close();
    metrics.close();
    registry.close();
    await workers.close();
    await io.close();
    await faceChecker?.close();
    await fanout.close();
    throw new AppError('CONFIG_INVALID', `cannot listen on ${config.host}:${config.port} (in use or not permitted)`);
  }
  port = uWS.us_socket_local_port(listenSocket);
  const url = localUrl(config.host, port);
  log.info('listening', { url, fanout: fanout.kind, engine: config.avatar.engine });
  await cluster?.start();

  let closing: Promise<void> | null = null;
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
    operatorKey,
    get closed() {
      return closing !== null;
    },
    close() {
      closing ??= (async () => {
        signaling.close();
        // Before the rooms close: this node's entries leave the directory at once, relays are closed.
        await cluster?.close();
        registry.close();
        // After the rooms: their workers come back (and are closed) before the pool's own are closed.
        await workers.close();
        whip.close();
        metrics.close();
        await io.close();
        uWS.us_listen_socket_close(listenSocket);
        await fanout.close();
        await faceChecker?.close();
        await portraits.flush();
        log.info('closed');
      })();
      return closing;
    },
  };
}
