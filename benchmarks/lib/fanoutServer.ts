/**
 * The fan-out benchmark's server, run as its own child process (`node --import tsx benchmarks/lib/fanoutServer.ts
 * '<json>'`, forked through benchmarks/lib/child.ts) so that its CPU, with its mediasoup worker children, is measured
 * apart from the performer's and the viewers'. The argument is a DeepPartial<Config> merged over the loopback
 * defaults (benchmarks/lib/loopback.ts). Says ready with { url, pid, apiKey } when it listens; SIGTERM closes the
 * server (rooms, peers, workers) and exits.
 *
 * Bench-only control channel (requests ServerRequest in fanoutProtocol.ts):
 * 'addRtpViewers' adds RTP viewers to the (only) room, for the SFU "decoding off, count RTP frames" modes. Each RTP
 * viewer goes through the product's viewer path, room.sfuCreateTransport(viewerId), so that it is counted and spread
 * over the room's routers exactly like a WebRTC viewer (MediasoupRoom's slotForNewViewer: viewersPerRouter, piping
 * to a router on another worker). The product API then only offers a WebRtcTransport (ICE + DTLS), which a viewer
 * without a WebRTC stack cannot complete; so, with the mediasoup objects this process can reach (the pool's workers,
 * MediasoupFanoutFactory.pool.workersForDump(), and their observers), RtpViewerHooks finds the router that
 * transport was created on, closes that unused WebRtcTransport, and creates on the same router a PlainTransport with
 * SRTP (the worker encrypts per viewer, as for WebRTC), comedia off, connected to the viewer's UDP socket, with a
 * consumer of the router's video producer (the room's own on the primary router, the pipe producer on a piped one).
 * No product code is involved beyond the public room API; this is not a product feature.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { types as ms } from 'mediasoup';
import { createServer, type AvatarServer } from '../../server/app.js';
import { defaultConfig, type Config, type DeepPartial } from '../../server/config.js';
import type { MediasoupFanoutFactory } from '../../server/media/mediasoupFanout.js';
import { ParentChannel, runChild } from './child.js';
import type { RtpViewersAdded, ServerReady, ServerRequest } from './fanoutProtocol.js';
import { loopbackConfig } from './loopback.js';

/**
 * Bench-only: follows the mediasoup workers' routers, transports and producers through their observers, so that the
 * router of a viewer's transport and the video producer of each router can be found (see the module comment).
 */
class RtpViewerHooks {
  readonly #routerOf = new Map<string, ms.Router>();
  readonly #transports = new Map<string, ms.Transport>();
  readonly #video = new Map<ms.Router, ms.Producer>();
  readonly #plain: ms.PlainTransport[] = [];
  #next = 0;

  constructor(workers: ms.Worker[]) {
    for (const w of workers) w.observer.on('newrouter', (r) => this.#router(r));
  }

  #router(r: ms.Router): void {
    r.observer.on('newtransport', (t) => {
      this.#routerOf.set(t.id, r);
      this.#transports.set(t.id, t);
      t.observer.once('close', () => {
        this.#routerOf.delete(t.id);
        this.#transports.delete(t.id);
      });
      t.observer.on('newproducer', (p) => {
        if (p.kind !== 'video') return;
        this.#video.set(r, p);
        p.observer.once('close', () => {
          if (this.#video.get(r) === p) this.#video.delete(r);
        });
      });
    });
  }

  async add(server: AvatarServer, ip: string, ports: number[]): Promise<RtpViewersAdded> {
    const t0 = performance.now();
    const room = server.rooms.rooms()[0];
    if (!room?.sfu) throw new Error('no SFU room');
    const errors: string[] = [];
    let added = 0;
    let videoPt: number | null = null;
    let srtpCryptoSuite: string | null = null;
    for (const port of ports) {
      try {
        const viewerId = `bench-rtp-viewer-${this.#next++}`;
        // The product's viewer path: a slot on the room's routers (counted, spread), and a WebRtcTransport there.
        const webrtc = await room.sfuCreateTransport(viewerId);
        const router = this.#routerOf.get(webrtc.id);
        if (!router) throw new Error('the viewer transport was not seen on any router');
        // Unused (no ICE/DTLS here): closed, so that it holds no port; the viewer stays counted on its router.
        this.#transports.get(webrtc.id)?.close();
        const producer = this.#video.get(router);
        if (!producer) throw new Error('no video producer on the viewer router');
        const plain = await router.createPlainTransport({
          listenInfo: { protocol: 'udp', ip: '127.0.0.1' },
          rtcpMux: true,
          comedia: false,
          enableSrtp: true,
          srtpCryptoSuite: 'AES_CM_128_HMAC_SHA1_80',
        });
        this.#plain.push(plain);
        // The receiver does not decrypt (the RTP header it counts is not encrypted) and sends nothing: any key.
        await plain.connect({
          ip,
          port,
          srtpParameters: { cryptoSuite: 'AES_CM_128_HMAC_SHA1_80', keyBase64: randomBytes(30).toString('base64') },
        });
        const consumer = await plain.consume({ producerId: producer.id, rtpCapabilities: router.rtpCapabilities });
        // As the product's resume() does for a joining viewer.
        await consumer.requestKeyFrame().catch(() => undefined);
        videoPt ??= consumer.rtpParameters.codecs[0]?.payloadType ?? null;
        srtpCryptoSuite ??= plain.srtpParameters?.cryptoSuite ?? null;
        added++;
      } catch (err) {
        errors.push(err instanceof Error ? err.message : String(err));
      }
    }
    return {
      added,
      errors: [...new Set(errors)],
      videoPt,
      srtpCryptoSuite,
      routers: room.sfu.routers(),
      ms: performance.now() - t0,
    };
  }
}

async function main(): Promise<void> {
  const overrides = JSON.parse(process.argv[2] ?? '{}') as DeepPartial<Config>;
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'avatar-fanout-'));
  // Servers that guard the management API with keys (config.auth.apiKeys) get one for the benchmark; the benchmark
  // sends it as a bearer token either way.
  const apiKey = `ak_${randomBytes(24).toString('base64url')}`;
  const auth = 'auth' in defaultConfig() ? { auth: { apiKeys: [{ name: 'bench', secret: apiKey }] } } : {};
  const server = await createServer(loopbackConfig(dataDir, { ...auth, ...overrides }));
  const hooks =
    server.fanout.kind === 'sfu'
      ? new RtpViewerHooks((server.fanout as MediasoupFanoutFactory).pool.workersForDump())
      : null;
  const parent = new ParentChannel<ServerRequest, ServerReady>((m) => {
    if (!hooks) return Promise.reject(new Error('no SFU: RTP viewers need fanout.mode sfu'));
    return hooks.add(server, m.ip, m.ports);
  });
  parent.onStop('fanout server', async () => {
    await server.close();
    await rm(dataDir, { recursive: true, force: true });
  });
  parent.ready({ url: server.url, pid: process.pid, apiKey });
}

runChild('fanout server', main);
