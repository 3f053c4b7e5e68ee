/**
 * SafeEventEmitter (server/util/events.ts): a listener that throws is logged, not propagated into the emitter, and
 * the listeners after it still run; once() listeners are removed as with emit().
 */
import { describe, expect, it } from 'vitest';
import { SafeEventEmitter } from '../../server/util/events.js';

interface Events {
  tick: [n: number];
  close: [];
}

class Ticker extends SafeEventEmitter<Events> {
  closed = false;
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.safeEmit('close');
  }
}

describe('SafeEventEmitter', () => {
  it('contains a throwing listener: close() completes and the next listener runs', () => {
    const t = new Ticker();
    const seen: string[] = [];
    t.on('close', () => {
      throw new Error('listener bug');
    });
    t.on('close', () => seen.push('second'));
    expect(() => t.close()).not.toThrow();
    expect(t.closed).toBe(true);
    expect(seen).toEqual(['second']);
  });

  it('passes the arguments, removes once() listeners and says whether anybody listened', () => {
    const t = new Ticker();
    const got: number[] = [];
    t.once('tick', (n) => got.push(n));
    t.on('tick', (n) => got.push(n * 10));
    expect(t.safeEmit('tick', 1)).toBe(true);
    expect(t.safeEmit('tick', 2)).toBe(true);
    expect(got).toEqual([1, 10, 20]);
    expect(t.listenerCount('tick')).toBe(1);
    expect(t.safeEmit('close')).toBe(false);
  });
});
