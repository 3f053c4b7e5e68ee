/**
 * Finds what a piece of code leaves behind in this process: every handle it created (worker threads and their
 * message ports, TCP and pipe sockets, servers, child processes, timers and immediates, ref'd or not) that was not
 * destroyed, and every file descriptor it opened (native sockets such as uWebSockets.js's, which Node does not see,
 * included) that is still open. Handles are tracked with async_hooks from start() to settle(); descriptors are
 * compared with the ones open at start().
 */
import { createHook, type AsyncHook } from 'node:async_hooks';
import { readdirSync, readlinkSync } from 'node:fs';

/** The async resource types that hold something (a thread, a socket, a process, a timer). */
const WATCHED = new Set([
  'WORKER',
  'MESSAGEPORT',
  'TCPWRAP',
  'TCPSERVERWRAP',
  'PIPEWRAP',
  'PIPESERVERWRAP',
  'PROCESSWRAP',
  'UDPWRAP',
  'SIGNALWRAP',
  'FSEVENTWRAP',
  'STATWATCHER',
  'TTYWRAP',
  'Timeout',
  'Immediate',
]);

function openFds(): Map<string, string> {
  const fds = new Map<string, string>();
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      fds.set(fd, readlinkSync(`/proc/self/fd/${fd}`));
    } catch {
      // The descriptor readdir itself used, closed by now.
    }
  }
  return fds;
}

export class LeakWatch {
  readonly #live = new Map<number, string>();
  readonly #hook: AsyncHook;
  #recording = false;
  #fds = new Map<string, string>();

  constructor() {
    this.#hook = createHook({
      init: (id, type) => {
        if (this.#recording && WATCHED.has(type)) this.#live.set(id, type);
      },
      destroy: (id) => {
        this.#live.delete(id);
      },
    });
  }

  /** Starts watching: handles created from now on are tracked, descriptors open now are the baseline. */
  start(): void {
    // process.stdout and stderr are created on first use (a worker thread's output is written to them): once, for the
    // whole process, so not something the watched code leaves.
    void process.stdout.writable;
    void process.stderr.writable;
    this.#live.clear();
    this.#fds = openFds();
    this.#recording = true;
    this.#hook.enable();
  }

  /** Stops recording new handles (the test's own waiting is not the code's); destroyed ones are still noted. */
  stopRecording(): void {
    this.#recording = false;
  }

  /** What is still there: handle types created since start() and not destroyed, descriptors opened since start(). */
  leftovers(): string[] {
    const out = [...this.#live.values()].map((t) => `handle ${t}`);
    for (const [fd, target] of openFds()) {
      if (this.#fds.get(fd) !== target) out.push(`fd ${fd} -> ${target}`);
    }
    return out.sort();
  }

  /** Stops watching. */
  close(): void {
    this.#recording = false;
    this.#hook.disable();
    this.#live.clear();
  }
}

/** Whether a process with this pid exists (signal 0 checks without sending anything). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
