/**
 * Typed event emitters whose listeners cannot break the emitter. `safeEmit()` calls every listener in turn and logs
 * one that throws instead of letting the error run back into the emitter (into a close() half done, a frame
 * callback, a timer), as mediasoup's EnhancedEventEmitter does; the other listeners still run. Every emitter of the
 * server extends this class with its event map, so that the map documents what it emits and the compiler checks
 * both sides.
 */
import { EventEmitter } from 'node:events';
import { createLogger } from '../logger.js';

const log = createLogger('events');

/** An event map: event name -> listener arguments (a tuple). */
export type EventMap<E> = Record<keyof E, unknown[]>;

export class SafeEventEmitter<E extends EventMap<E>> extends EventEmitter<E> {
  /**
   * Emits `event` to each listener; a listener that throws is logged (with the emitter's class and the event) and
   * the next one runs. Returns whether there were listeners.
   */
  safeEmit<K extends keyof E & string>(event: K, ...args: E[K]): boolean {
    // rawListeners: once() wrappers remove themselves when called, as emit() would do.
    const listeners = (this as EventEmitter).rawListeners(event) as ((...a: unknown[]) => unknown)[];
    for (const listener of listeners) {
      try {
        listener.apply(this, args);
      } catch (err) {
        log.error('event listener threw', { emitter: this.constructor.name, event, err });
      }
    }
    return listeners.length > 0;
  }
}
