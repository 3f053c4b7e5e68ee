/**
 * Waiting helpers for tests: poll a condition until it holds or a deadline passes (never sleep-then-assert).
 */

/**
 * Resolves with the first truthy value `condition` returns (sync or async), polling every `intervalMs`.
 * Rejects with a message naming `what` when `timeoutMs` passes first. Exceptions thrown by the condition count as
 * "not yet" until the deadline, then the last one is reported.
 */
export async function waitFor<T>(
  condition: () => T | Promise<T>,
  timeoutMs = 5000,
  what = 'condition',
  intervalMs = 10,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await condition();
      if (v) return v;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const detail = lastError instanceof Error ? `: last error: ${lastError.message}` : '';
      throw new Error(`waitFor: ${what} not met within ${timeoutMs} ms${detail}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Resolves with the arguments of the next `event` emitted by `emitter`, or rejects after `timeoutMs`. */
export function nextEvent<A extends unknown[] = unknown[]>(
  emitter: { once: (...args: never[]) => unknown; off: (...args: never[]) => unknown },
  event: string,
  timeoutMs = 5000,
): Promise<A> {
  // Works for Node EventEmitters and socket.io sockets alike (their typed signatures differ).
  type Fn = (ev: string, fn: (...args: unknown[]) => void) => unknown;
  const once = (emitter.once as unknown as Fn).bind(emitter);
  const off = (emitter.off as unknown as Fn).bind(emitter);
  return new Promise((resolve, reject) => {
    const onEvent = (...args: unknown[]): void => {
      clearTimeout(timer);
      resolve(args as A);
    };
    const timer = setTimeout(() => {
      off(event, onEvent);
      reject(new Error(`nextEvent: "${event}" not emitted within ${timeoutMs} ms`));
    }, timeoutMs);
    once(event, onEvent);
  });
}
