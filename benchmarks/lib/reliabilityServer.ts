/**
 * The reliability benchmarks' server, run as its own child process (`node --import tsx --expose-gc
 * benchmarks/lib/reliabilityServer.ts '<json>'`, forked through benchmarks/lib/child.ts by benchmarks/lib/reliability.ts) so that
 * its memory is the server's alone and its 'unhandledRejection' / 'uncaughtException' are seen where they happen.
 *
 * The argument is { overrides: DeepPartial<Config> (over the loopback defaults, benchmarks/lib/loopback.ts),
 * inspector: boolean }. It creates the real server (createServer)
 * and then only watches and reports:
 * - every 100 ms a 'tick' message: per room, the synthesized frames made from performer frames since the last tick
 *   (the Room's 'frame' events; the idle resends are not counted), the session's cumulative drops and restarts,
 *   whether it gave up (failed), the viewer count and whether a performer publishes;
 * - on request: process.memoryUsage() (after a full GC when asked), the worker-kill fault, the room list.
 * - unhandled rejections and uncaught exceptions: counted, reported as a 'fault' message and on stderr (the process
 *   keeps running, as the bare server would not: the benchmark records them).
 *
 * The worker-kill fault is a crash inside the avatar worker thread, the way an engine bug would crash it: through
 * the inspector's NodeWorker domain (no hook in the server), `setImmediate(() => { throw ... })` is evaluated in the
 * worker's own context, so the worker dies of an uncaught exception (exit code 1) and AvatarSession's supervisor
 * sees exactly what it sees for a real crash.
 *
 * SIGTERM or the IPC channel closing closes the server and exits.
 */
import inspector from 'node:inspector';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createServer, type AvatarServer } from '../../server/app.js';
import type { Room } from '../../server/rooms/room.js';
import { ParentChannel, runChild } from './child.js';
import { loopbackConfig } from './loopback.js';
import {
  prototypePolluted,
  type RoomTick,
  type ServerEvent,
  type ServerProcArgs,
  type ServerReady,
  type ToServerProc,
} from './reliabilityProtocol.js';
import { now } from './viewer.js';

let parent: ParentChannel<ToServerProc, ServerReady, ServerEvent> | null = null;
const send = (e: ServerEvent): void => parent?.event(e);

let faults = 0;
process.on('unhandledRejection', (reason) => {
  faults++;
  const text = reason instanceof Error ? (reason.stack ?? reason.message) : String(reason);
  process.stderr.write(`RELIABILITY_FAULT unhandledRejection ${text}\n`);
  send({ type: 'fault', kind: 'unhandledRejection', message: text.slice(0, 2000), at: now() });
});
process.on('uncaughtException', (err) => {
  faults++;
  process.stderr.write(`RELIABILITY_FAULT uncaughtException ${err.stack ?? err.message}\n`);
  send({ type: 'fault', kind: 'uncaughtException', message: (err.stack ?? err.message).slice(0, 2000), at: now() });
});

/** Crashes avatar worker threads by thread id, through the inspector (see the header). */
class WorkerKiller {
  readonly #session = new inspector.Session();
  /** Inspector session ids by worker thread id. */
  readonly #workers = new Map<number, string>();
  #nextId = 1;

  constructor() {
    this.#session.connect();
    this.#session.on('NodeWorker.attachedToWorker', (m) => {
      const p = m.params as { sessionId: string; workerInfo: { workerId: string } };
      this.#workers.set(Number(p.workerInfo.workerId), p.sessionId);
    });
    this.#session.on('NodeWorker.detachedFromWorker', (m) => {
      const p = m.params;
      for (const [k, v] of this.#workers) if (v === p.sessionId) this.#workers.delete(k);
    });
    this.#session.post('NodeWorker.enable', { waitForDebuggerOnStart: false });
  }

  kill(threadId: number): Promise<void> {
    const sessionId = this.#workers.get(threadId);
    if (!sessionId) return Promise.reject(new Error(`worker thread ${threadId} is not attached to the inspector`));
    const message = JSON.stringify({
      id: this.#nextId++,
      method: 'Runtime.evaluate',
      params: {
        expression: "setImmediate(() => { throw new Error('reliability benchmark: injected worker crash'); })",
      },
    });
    return new Promise((resolve, reject) =>
      this.#session.post('NodeWorker.sendMessageToWorker', { sessionId, message }, (err) =>
        err ? reject(err) : resolve(),
      ),
    );
  }

  close(): void {
    this.#session.disconnect();
  }
}

interface Watched {
  room: Room;
  frames: number;
}

async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2] ?? '{}') as ServerProcArgs;
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'avatar-reliability-'));
  const config = loopbackConfig(dataDir, args.overrides);
  const killer = args.inspector ? new WorkerKiller() : null;
  const server: AvatarServer = await createServer(config);
  const rooms = new Map<string, Watched>();
  server.rooms.on('room', (room: Room) => {
    const w: Watched = { room, frames: 0 };
    rooms.set(room.id, w);
    room.on('frame', () => w.frames++);
    room.once('close', () => rooms.delete(room.id));
  });
  const ticker = setInterval(() => {
    const out: RoomTick[] = [];
    for (const [id, w] of rooms) {
      const s = w.room.parts.session;
      out.push({
        roomId: id,
        frames: w.frames,
        dropped: s.dropped,
        restarts: s.restarts,
        failed: s.failed,
        viewers: w.room.viewerCount,
        publishing: w.room.publishing,
      });
      w.frames = 0;
    }
    send({ type: 'tick', at: now(), rooms: out });
  }, 100);

  const handle = async (m: ToServerProc): Promise<unknown> => {
    switch (m.cmd) {
      case 'memory': {
        if (m.gc && typeof globalThis.gc === 'function') globalThis.gc();
        const u = process.memoryUsage();
        const { idle, starting, live } = server.workers.stats;
        const threads = Number(/^Threads:\s+(\d+)/m.exec(await readFile('/proc/self/status', 'utf8'))?.[1] ?? -1);
        return {
          rss: u.rss,
          heapUsed: u.heapUsed,
          heapTotal: u.heapTotal,
          external: u.external,
          arrayBuffers: u.arrayBuffers,
          workers: { idle, starting, live },
          threads,
        };
      }
      case 'killWorker': {
        if (!killer) throw new Error('started without the inspector');
        const room = server.rooms.get(m.roomId);
        const tid = room?.parts.session.workerThreadId;
        if (tid === null || tid === undefined) throw new Error('no running worker in that room');
        await killer.kill(tid);
        return { threadId: tid, at: now() };
      }
      case 'faults':
        return { faults };
      case 'polluted':
        return { polluted: prototypePolluted() };
    }
  };
  parent = new ParentChannel<ToServerProc, ServerReady, ServerEvent>(handle);
  parent.onStop(
    'reliability server',
    async () => {
      clearInterval(ticker);
      killer?.close();
      await server.close();
      await rm(dataDir, { recursive: true, force: true });
    },
    15_000,
  );
  parent.ready({ url: server.url, pid: process.pid, apiKey: server.operatorKey ?? '' });
}

runChild('reliability server', main);
