/**
 * A progress display for the offline commands: frames done / total, frames per second and the time left.
 * On a TTY one line is redrawn in place (at most 10 times a second); otherwise plain lines are written, one per 10%
 * of the work or every 5 s, whichever comes first, so that logs stay short and readable.
 */

/** The subset of a writable stream the progress display needs (process.stderr fits). */
export interface ProgressStream {
  write(chunk: string): boolean;
  isTTY?: boolean;
  columns?: number;
}

export interface ProgressOptions {
  /** Total frames; 0 or undefined when unknown (no ETA, no bar). */
  total?: number;
  /** Shown before the counters. */
  label: string;
  stream: ProgressStream;
  /** Clock in ms (injectable for tests of the formatting); default performance.now. */
  now?: () => number;
}

/** Formats a duration in seconds as m:ss (or h:mm:ss). */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

export class Progress {
  readonly #label: string;
  readonly #stream: ProgressStream;
  readonly #now: () => number;
  readonly #tty: boolean;
  #total: number;
  #done = 0;
  #start: number;
  #lastDraw = -Infinity;
  #lastDecile = -1;
  #finished = false;

  constructor(opts: ProgressOptions) {
    this.#label = opts.label;
    this.#stream = opts.stream;
    this.#now = opts.now ?? (() => performance.now());
    this.#tty = opts.stream.isTTY === true;
    this.#total = Math.max(0, opts.total ?? 0);
    this.#start = this.#now();
  }

  /** Frames done so far. */
  get done(): number {
    return this.#done;
  }

  /** Changes the total (e.g. once the real frame count is known). */
  setTotal(total: number): void {
    this.#total = Math.max(0, total);
  }

  /** Records `n` more frames done and redraws when due. */
  tick(n = 1): void {
    if (this.#finished) return;
    this.#done += n;
    const t = this.#now();
    if (this.#tty) {
      if (t - this.#lastDraw >= 100) {
        this.#lastDraw = t;
        this.#stream.write(`\r${this.line(t)}\x1b[K`);
      }
      return;
    }
    const decile = this.#total ? Math.floor((this.#done * 10) / this.#total) : -1;
    if (decile > this.#lastDecile || t - this.#lastDraw >= 5000) {
      this.#lastDecile = Math.max(decile, this.#lastDecile);
      this.#lastDraw = t;
      this.#stream.write(`${this.line(t)}\n`);
    }
  }

  /** Writes the final line (with a newline on a TTY). Idempotent. */
  finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    const t = this.#now();
    const text = this.line(t, true);
    this.#stream.write(this.#tty ? `\r${text}\x1b[K\n` : `${text}\n`);
  }

  /** The status text at time `t`. */
  line(t: number = this.#now(), final = false): string {
    const elapsed = Math.max(1e-9, (t - this.#start) / 1000);
    const fps = this.#done / elapsed;
    const total = this.#total;
    const parts = [this.#label];
    if (total) {
      const frac = Math.min(1, this.#done / total);
      if (this.#tty) {
        const width = 24;
        const filled = Math.round(frac * width);
        parts.push(`[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`);
      }
      parts.push(`${this.#done}/${total} frames (${Math.round(frac * 100)}%)`);
    } else {
      parts.push(`${this.#done} frames`);
    }
    parts.push(`${fps.toFixed(1)} fps`);
    if (final) parts.push(`done in ${formatDuration(elapsed)}`);
    else if (total && this.#done > 0) parts.push(`ETA ${formatDuration(Math.max(0, total - this.#done) / fps)}`);
    else parts.push('ETA --:--');
    return parts.join('  ');
  }
}
