/**
 * Start and stop the whole server in each configuration, with real things in use, and find nothing left behind:
 * - direct fan-out with the default engine (the face checker's thread, the avatar worker pool's engine threads);
 * - the mediasoup SFU (a real worker process at MEDIASOUP_WORKER_BIN);
 * - a cluster node (the SFU, and a real Redis on loopback for the room directory).
 * Each run uploads a portrait and creates a room over REST, joins a performer and a viewer over socket.io (the viewer
 * asks the SFU for its capabilities and a transport where there is one), then stops the server. Afterwards no handle created meanwhile
 * may be alive (worker threads and their ports, sockets, servers, child processes, timers and immediates, unref'd
 * ones included), no file descriptor opened meanwhile may be open (uWebSockets.js's native sockets included), the
 * mediasoup worker processes must be gone and the port must be free. A first test shows that the check sees a
 * leftover of each kind, so that it can fail.
 */
import { spawn } from 'node:child_process';
import net from 'node:net';
import { Worker } from 'node:worker_threads';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Config, DeepPartial } from '../../server/config.js';
import type { JoinResponse } from '../../server/types/protocol.js';
import { portraitFile } from '../../scripts/testData.js';
import { LeakWatch, processAlive } from '../helpers/leaks.js';
import { isPortFree } from '../helpers/net.js';
import { haveRedis, startRedis, type TestRedis } from '../helpers/redis.js';
import { createTestRoom, startTestServer, type TestServer } from '../helpers/server.js';
import { call, connectClient, type ClientSocket } from '../helpers/socket.js';
import { waitFor } from '../helpers/wait.js';

const workerBin = process.env.MEDIASOUP_WORKER_BIN;
if (!workerBin)
  console.log('mediasoup worker not available (MEDIASOUP_WORKER_BIN unset): SFU and cluster teardown tests skipped');
if (!haveRedis) console.log('no /usr/bin/redis-server: cluster teardown test skipped');

const watch = new LeakWatch();
afterEach(() => watch.close());

/** Waits until nothing is left (settling closes take a moment: thread exits, socket FINs), then asserts it. */
async function expectNothingLeft(): Promise<void> {
  watch.stopRecording();
  await waitFor(() => watch.leftovers().length === 0, 15_000, 'every handle and descriptor closed').catch(
    () => undefined,
  );
  expect(watch.leftovers()).toEqual([]);
}

/**
 * Starts a server with `overrides`, uses it as a performer and a viewer would, stops it; checks what is left. Run
 * twice, the check on the second: native libraries (libwebrtc's threads and their sockets, onnxruntime's telemetry
 * database) keep what they open on first use until the process exits, so the first run is the baseline that a
 * server must return to (and the second shows that a stopped server can be started again in the same process).
 */
async function startUseStop(overrides: DeepPartial<Config>): Promise<void> {
  await useOnce(overrides, false);
  await useOnce(overrides, true);
}

async function useOnce(overrides: DeepPartial<Config>, check: boolean): Promise<void> {
  if (check) watch.start();
  const ts: TestServer = await startTestServer(overrides);
  const sockets: ClientSocket[] = [];
  let workerPids: number[] = [];
  try {
    const room = await createTestRoom(ts.url, portraitFile('real_woman_dark_hair.png'));
    const performer = await connectClient(ts.url);
    sockets.push(performer);
    const viewer = await connectClient(ts.url);
    sockets.push(viewer);
    expect((await call<JoinResponse>(performer, 'join', { token: room.performerToken })).role).toBe('performer');
    const joined = await call<JoinResponse>(viewer, 'join', { token: room.viewerToken });
    expect(joined.role).toBe('viewer');
    if (ts.server.fanout.kind === 'sfu') {
      expect(joined.fanout).toBe('sfu');
      await call(viewer, 'sfu:capabilities', {});
      await call(viewer, 'sfu:createTransport', {});
    }
    workerPids = ts.server.fanout.workers().map((w) => w.pid);
  } finally {
    for (const s of sockets) s.disconnect();
    await ts.stop();
  }
  expect(ts.server.closed).toBe(true);
  expect(await isPortFree(ts.port)).toBe(true);
  for (const pid of workerPids) await waitFor(() => !processAlive(pid), 5000, `mediasoup worker ${pid} gone`);
  if (check) await expectNothingLeft();
}

describe('server teardown leaves nothing behind', () => {
  it('the check sees a leftover thread, socket, child process and timer', async () => {
    watch.start();
    const worker = new Worker('setInterval(() => {}, 1000)', { eval: true });
    await new Promise((resolve) => worker.once('online', resolve));
    const server = net.createServer().listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    const timer = setInterval(() => {}, 1000);
    timer.unref();
    watch.stopRecording();
    const left = watch.leftovers();
    for (const kind of ['handle WORKER', 'handle TCPSERVERWRAP', 'handle PROCESSWRAP', 'handle Timeout'])
      expect(left).toContain(kind);
    expect(left.some((l) => l.startsWith('fd '))).toBe(true);
    clearInterval(timer);
    child.kill();
    await new Promise((resolve) => child.once('exit', resolve));
    await new Promise((resolve) => server.close(resolve));
    await worker.terminate();
    await waitFor(() => watch.leftovers().length === 0, 5000, 'the planted leftovers closed').catch(() => undefined);
    expect(watch.leftovers()).toEqual([]);
  });

  it('direct fan-out, default engine', async () => {
    await startUseStop({ fanout: { mode: 'direct' } });
  });

  it.skipIf(!workerBin)('mediasoup SFU', async () => {
    await startUseStop({
      avatar: { engine: 'portrait', outputSize: 256 },
      fanout: { mode: 'sfu', workers: 1, mediasoupWorkerBin: workerBin ?? null },
    });
  });

  describe.skipIf(!workerBin || !haveRedis)('cluster node', () => {
    let redis: TestRedis;
    beforeAll(async () => {
      redis = await startRedis();
    });
    afterAll(async () => {
      await redis?.stop();
    });

    it('SFU and a Redis room directory', async () => {
      await startUseStop({
        avatar: { engine: 'portrait', outputSize: 256 },
        fanout: { mode: 'sfu', workers: 1, mediasoupWorkerBin: workerBin ?? null },
        cluster: { redisUrl: redis.url, nodeId: 'teardown-node' },
      });
    });
  });
});
