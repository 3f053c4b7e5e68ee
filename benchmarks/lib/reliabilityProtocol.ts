/**
 * Requests, ready message and events between the reliability benchmarks (benchmarks/lib/reliability.ts) and their
 * server process (benchmarks/lib/reliabilityServer.ts), carried by benchmarks/lib/child.ts. Times are epoch ms with sub-ms precision (performance.timeOrigin +
 * performance.now()), comparable across the two processes.
 */

export interface ServerProcArgs {
  /** DeepPartial<Config> merged over the benchmark defaults (loopback, port 0, direct fan-out, ICE on 127.0.0.1). */
  overrides: Record<string, unknown>;
  /** Attach the inspector's NodeWorker domain (needed for 'killWorker'). */
  inspector: boolean;
}

export type ToServerProc =
  /** process.memoryUsage(); with gc, after a full garbage collection (the child runs with --expose-gc). */
  | { cmd: 'memory'; gc: boolean }
  /** Crashes the room's avatar worker thread (an uncaught exception inside it). */
  | { cmd: 'killWorker'; roomId: string }
  /** Unhandled rejections + uncaught exceptions so far. */
  | { cmd: 'faults' }
  /** Whether plain objects of the server process inherit a key the fuzzer tried to pollute their prototype with. */
  | { cmd: 'polluted' };

export interface MemoryUsage {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  /** The server's avatar worker pool: idle, starting and live worker threads (server/avatar/workerPool.ts). */
  workers?: { idle: number; starting: number; live: number };
  /** Threads of the server process (/proc/self/status). */
  threads?: number;
}

/** One room in a 100 ms tick. */
export interface RoomTick {
  roomId: string;
  /** Frames synthesized from performer frames and published since the previous tick. */
  frames: number;
  /** The session's cumulative dropped driving frames. */
  dropped: number;
  /** Worker restarts so far. */
  restarts: number;
  /** The session gave up after too many crashes. */
  failed: boolean;
  viewers: number;
  publishing: boolean;
}

export interface ServerReady {
  url: string;
  pid: number;
  apiKey: string;
}

export type ServerEvent =
  | { type: 'tick'; at: number; rooms: RoomTick[] }
  | { type: 'fault'; kind: 'unhandledRejection' | 'uncaughtException'; message: string; at: number };

/** Whether the key reliabilityFuzz.ts tries to slip into Object.prototype (__proto__, constructor.prototype) got there. */
export function prototypePolluted(): boolean {
  return 'fuzzPolluted' in {} || Object.prototype.hasOwnProperty.call(Object.prototype, 'fuzzPolluted');
}
