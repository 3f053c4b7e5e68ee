/**
 * The one protocol between a benchmark and the processes it starts (the server, the viewer processes, the RTP
 * receiver): so that CPU and memory are measured where they are spent, and a crash is seen where it happens.
 *
 * The child is a TypeScript file forked with tsx and an IPC channel. On the channel:
 * - child → parent, once, when it can take requests: `{ kind: 'ready', info }`;
 * - parent → child: `{ id, req }`, a request (an object with a `cmd`); the child answers every request, in any order,
 *   with `{ kind: 'reply', id, ok: true, data }` or `{ kind: 'reply', id, ok: false, error }`;
 * - child → parent, unasked: `{ kind: 'event', event }` (the reliability server's ticks and faults).
 * Stopping: the parent sends SIGTERM (SIGKILL after a deadline); the child closes what it holds on SIGTERM, SIGINT or
 * the channel closing, and exits explicitly (wrtc's finalizers crash at a natural exit).
 */
import { fork, type ChildProcess } from 'node:child_process';

/** A request: `cmd` names it. */
export interface Request {
  readonly cmd: string;
}

type ToChild<Req> = { id: number; req: Req };
type FromChild<Ready, Event> =
  | { kind: 'ready'; info: Ready }
  | { kind: 'reply'; id: number; ok: true; data: unknown }
  | { kind: 'reply'; id: number; ok: false; error: string }
  | { kind: 'event'; event: Event };

export interface ChildOptions {
  /** Named in errors. */
  name: string;
  /** The .ts file to run. */
  entry: string;
  /** Its command-line arguments (process.argv.slice(2) in the child). */
  args?: string[];
  /** Node flags besides `--import tsx`. */
  nodeFlags?: string[];
  env?: NodeJS.ProcessEnv;
  /** The child's stdout: shown (inherit) or dropped (ignore, the default). */
  stdout?: 'inherit' | 'ignore';
  /** The child's stderr: shown (inherit, the default) or kept, its last `stderrLines` lines in `stderr` (keep). */
  stderr?: 'inherit' | 'keep';
  stderrLines?: number;
  /** How long it may take to be ready, ms (default 60 s). */
  readyTimeoutMs?: number;
}

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** The parent's side: a started child, ready for requests. */
export class ChildProc<Req extends Request, Ready, Event = never> {
  readonly name: string;
  /** What the child said when it was ready. */
  readonly info: Ready;
  readonly pid: number;
  /** The last lines of its stderr (with `stderr: 'keep'`). */
  readonly stderr: string[];
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  readonly #listeners = new Set<(e: Event) => void>();
  readonly #exited: Promise<number | null>;
  #exitCode: number | null | undefined = undefined;
  #nextId = 1;

  private constructor(
    name: string,
    child: ChildProcess,
    info: Ready,
    stderr: string[],
    exited: Promise<number | null>,
  ) {
    this.name = name;
    this.#child = child;
    this.info = info;
    this.pid = child.pid!;
    this.stderr = stderr;
    this.#exited = exited;
    void exited.then((code) => {
      this.#exitCode = code;
      for (const p of this.#pending.values()) p.reject(new Error(`${name}: exited (${code}) before it answered`));
      this.#pending.clear();
    });
    child.on('message', (m: FromChild<Ready, Event>) => this.#onMessage(m));
  }

  /** Forks the child and waits for its ready message. */
  static async start<Req extends Request, Ready, Event = never>(
    o: ChildOptions,
  ): Promise<ChildProc<Req, Ready, Event>> {
    const keep = o.stderr === 'keep';
    const child = fork(o.entry, o.args ?? [], {
      execArgv: ['--import', 'tsx', ...(o.nodeFlags ?? [])],
      env: o.env ?? process.env,
      stdio: ['ignore', o.stdout ?? 'ignore', keep ? 'pipe' : 'inherit', 'ipc'],
    });
    const stderr: string[] = [];
    const max = o.stderrLines ?? 400;
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      for (const line of d.split('\n')) {
        if (!line.trim()) continue;
        stderr.push(line);
        if (stderr.length > max) stderr.shift();
      }
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const timeoutMs = o.readyTimeoutMs ?? 60_000;
    let timer: NodeJS.Timeout | undefined;
    try {
      const info = await new Promise<Ready>((resolve, reject) => {
        timer = setTimeout(
          () => reject(new Error(`${o.name}: not ready in ${timeoutMs} ms: ${stderr.slice(-20).join('\n')}`)),
          timeoutMs,
        );
        child.on('message', (m: FromChild<Ready, Event>) => {
          if (m.kind === 'ready') resolve(m.info);
        });
        void exited.then((code) =>
          reject(new Error(`${o.name}: exited (${code}) before it was ready: ${stderr.slice(-20).join('\n')}`)),
        );
      });
      return new ChildProc<Req, Ready, Event>(o.name, child, info, stderr, exited);
    } catch (err) {
      child.kill('SIGKILL');
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Whether the process is still running. */
  get alive(): boolean {
    return this.#exitCode === undefined;
  }

  /** Its exit code once it exited (null: killed by a signal), undefined while it runs. */
  get exitCode(): number | null | undefined {
    return this.#exitCode;
  }

  #onMessage(m: FromChild<Ready, Event>): void {
    if (m.kind === 'event') for (const l of this.#listeners) l(m.event);
    else if (m.kind === 'reply') {
      const p = this.#pending.get(m.id);
      if (!p) return;
      this.#pending.delete(m.id);
      if (m.ok) p.resolve(m.data);
      else p.reject(new Error(`${this.name}: ${m.error}`));
    }
  }

  /** Listens to the child's events; returns the function that stops listening. */
  onEvent(fn: (e: Event) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** One request; resolves with the child's answer (T: what this request answers). */
  request<T>(req: Req, timeoutMs = 600_000): Promise<T> {
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      if (!this.alive) return reject(new Error(`${this.name}: not running`));
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`${this.name}: no answer to ${req.cmd} in ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.#child.send({ id, req } satisfies ToChild<Req>);
    });
  }

  /** SIGTERM, then SIGKILL after `killAfterMs`. Resolves with the exit code. */
  async stop(killAfterMs = 15_000): Promise<number | null> {
    if (!this.alive) return this.#exitCode ?? null;
    this.#child.kill('SIGTERM');
    const t = setTimeout(() => this.#child.kill('SIGKILL'), killAfterMs);
    const code = await this.#exited;
    clearTimeout(t);
    return code;
  }
}

/** The child's side: answers the parent's requests with `handle`, and sends its ready message and events. */
export class ParentChannel<Req extends Request, Ready, Event = never> {
  constructor(handle: (req: Req) => Promise<unknown>) {
    process.on('message', (m: ToChild<Req>) => {
      handle(m.req).then(
        (data) => this.#send({ kind: 'reply', id: m.id, ok: true, data }),
        (err: unknown) => this.#send({ kind: 'reply', id: m.id, ok: false, error: message(err) }),
      );
    });
  }

  #send(m: FromChild<Ready, Event>): void {
    if (process.connected) process.send?.(m);
  }

  ready(info: Ready): void {
    this.#send({ kind: 'ready', info });
  }

  event(event: Event): void {
    this.#send({ kind: 'event', event });
  }

  /**
   * On SIGTERM, SIGINT or the channel closing: `close()` (once), then exit 0, or 1 when it fails or takes longer than
   * `deadlineMs`.
   */
  onStop(name: string, close: () => Promise<void> | void, deadlineMs = 10_000): void {
    let stopping = false;
    const stop = (): void => {
      if (stopping) return;
      stopping = true;
      setTimeout(() => process.exit(1), deadlineMs).unref();
      Promise.resolve()
        .then(close)
        .then(
          // wrtc's finalizers crash at a natural exit: exit explicitly once everything is closed.
          () => process.exit(0),
          (err: unknown) => {
            process.stderr.write(`${name}: close failed: ${message(err)}\n`);
            process.exit(1);
          },
        );
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    process.once('disconnect', stop);
  }
}

/** A child's main(): on failure, the error on stderr and exit 1 (the parent sees it exit before ready). */
export function runChild(name: string, main: () => Promise<void>): void {
  main().catch((err: unknown) => {
    process.stderr.write(`${name}: start failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
