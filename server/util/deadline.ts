/**
 * A timer for a moment (ms since the epoch) rather than a delay, for deadlines that may lie weeks ahead (a link's
 * expiry: config.tokenTtlMs allows 30 days, setTimeout at most ~24.8 days): a far deadline is reached in steps.
 * The timer never keeps the process alive (unref).
 */

/** setTimeout's largest delay (2^31 - 1 ms); a larger one fires at once. */
const MAX_DELAY_MS = 2 ** 31 - 1;

/** Calls `fn` once at `at` (ms since the epoch; at once when it has passed). Returns a function that cancels it. */
export function atTime(at: number, fn: () => void, now: () => number = Date.now): () => void {
  let timer: NodeJS.Timeout | null = null;
  const arm = (): void => {
    const left = at - now();
    timer = setTimeout(
      () => {
        timer = null;
        if (at - now() > 0) arm();
        else fn();
      },
      Math.min(Math.max(left, 0), MAX_DELAY_MS),
    );
    timer.unref();
  };
  arm();
  return () => {
    if (timer) clearTimeout(timer);
    timer = null;
  };
}
