/**
 * Shutdown of the real server process (server/main.ts, as `npm start` runs it) with live peers: a performer
 * publishing over WebRTC and a viewer receiving, in direct and (with a mediasoup worker) SFU fan-out. SIGTERM must
 * tell every socket the room ended ('server-shutdown'), close the peers and exit with code 0 through the ordered
 * close, not through the 10 s shutdown deadline (exit code 1) or a crash of a WebRTC peer left alive (a signal).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { portraitFile } from '../../scripts/testData.js';
import type { JoinResponse, SdpResponse } from '../../server/types/protocol.js';
import { isPortFree } from '../helpers/net.js';
import { createTestRoom, repoRoot, TEST_API_KEY, TEST_TOKEN_SECRET } from '../helpers/server.js';
import { SocketSfuViewer } from '../helpers/sfuViewer.js';
import { call, connectClient, type ClientSocket } from '../helpers/socket.js';
import { waitFor } from '../helpers/wait.js';
import { PerformerClient, ViewerClient } from '../media/rtcClients.js';

const workerBin = process.env.MEDIASOUP_WORKER_BIN;
if (!workerBin)
  console.log('mediasoup worker not available (MEDIASOUP_WORKER_BIN unset): the SFU shutdown case skipped');

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('shutdown of the server process with live peers', () => {
  it.each(workerBin ? (['direct', 'sfu'] as const) : (['direct'] as const))(
    '%s fan-out: SIGTERM closes the room for every socket and the process exits with 0',
    async (mode) => {
      const dataDir = await mkdtemp(path.join(os.tmpdir(), 'avatar-shutdown-'));
      cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
      const cfg = path.join(dataDir, 'config.json');
      await writeFile(
        cfg,
        JSON.stringify({ media: { iceAddressAllowList: ['127.0.0.1'] }, avatar: { outputSize: 256 } }),
      );
      // `node --import tsx`, not the tsx binary: that one runs the server in a child process and would hide its code.
      const proc: ChildProcess = spawn(
        process.execPath,
        ['--import', 'tsx', path.join(repoRoot, 'server', 'main.ts')],
        {
          cwd: repoRoot,
          env: {
            ...process.env,
            PORT: '0',
            HOST: '127.0.0.1',
            AVATAR_DATA_DIR: dataDir,
            AVATAR_ENGINE: 'portrait',
            AVATAR_TOKEN_SECRET: TEST_TOKEN_SECRET,
            AVATAR_API_KEYS: `test:${TEST_API_KEY}`,
            AVATAR_CONFIG: cfg,
            FANOUT: mode,
            LOG_LEVEL: 'info',
          },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let out = '';
      proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
      const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        proc.once('exit', (code, signal) => resolve({ code, signal })),
      );
      let exited = false;
      void exit.then(() => (exited = true));
      cleanups.push(() => {
        if (!exited) proc.kill('SIGKILL');
      });

      const url = await waitFor(
        () => {
          if (exited) throw new Error(`server process exited:\n${out}`);
          return /"msg":"server ready".*?"url":"(http:\/\/[^"]+)"/.exec(out)?.[1];
        },
        60_000,
        'server ready',
      );
      const port = Number(new URL(url).port);
      const room = await createTestRoom(url, portraitFile('real_woman_dark_hair.png'));

      const sockets: ClientSocket[] = [];
      cleanups.push(() => sockets.forEach((s) => s.disconnect()));
      const closedReasons: string[] = [];
      const socket = async (): Promise<ClientSocket> => {
        const s = await connectClient(url);
        s.on('closed', ({ reason }) => closedReasons.push(reason));
        sockets.push(s);
        return s;
      };
      const ps = await socket();
      await call<JoinResponse>(ps, 'join', { token: room.performerToken });
      const performer = new PerformerClient();
      cleanups.push(() => performer.close());
      await performer.accept((await call<SdpResponse>(ps, 'publish', { sdp: await performer.offer() }, 30_000)).sdp);
      performer.start();

      const vs = await socket();
      expect((await call<JoinResponse>(vs, 'join', { token: room.viewerToken })).fanout).toBe(mode);
      let frames: () => number;
      if (mode === 'direct') {
        const viewer = new ViewerClient();
        cleanups.push(() => viewer.close());
        await viewer.accept((await call<SdpResponse>(vs, 'view', { sdp: await viewer.offer() }, 30_000)).sdp);
        frames = () => viewer.frames;
      } else {
        const viewer = new SocketSfuViewer(vs);
        cleanups.push(() => viewer.stopMedia());
        await viewer.view();
        frames = () => viewer.frames;
      }
      await waitFor(() => frames() >= 10, 30_000, 'frames at the viewer');
      await waitFor(() => /"msg":"socket joined".*"role":"viewer"/.test(out), 5000, 'viewer joined (log)');

      proc.kill('SIGTERM');
      const { code, signal } = await exit;
      expect({ code, signal }, out.slice(-4000)).toEqual({ code: 0, signal: null });
      expect(out).toContain('"msg":"shutting down"');
      expect(out).not.toContain('shutdown timed out');
      // Both sockets were told before the process went, then lost their connection.
      expect(closedReasons.sort()).toEqual(['server-shutdown', 'server-shutdown']);
      await waitFor(() => sockets.every((s) => s.disconnected), 5000, 'sockets disconnected');
      expect(await isPortFree(port)).toBe(true);
    },
  );
});
