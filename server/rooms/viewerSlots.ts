/**
 * Viewer quotas: how many viewers a room and a link (token) hold at once (config.quotas.viewersPerRoom and
 * viewersPerLink). A viewer is a socket joined as a viewer or a WHEP session; each takes a slot under a holder id
 * (`socket:<id>`, `whep:<id>`) when it starts and gives it back when it ends, whatever ended it. Pure bookkeeping, no
 * I/O: the maps hold only live holders and drop a room's or link's count when it reaches zero, so they never grow
 * beyond the viewers there are.
 */
import { AppError } from '../errors.js';

export interface ViewerSlotLimits {
  perRoom: number;
  perLink: number;
}

interface Slot {
  roomId: string;
  link: string;
}

export class ViewerSlots {
  readonly #limits: ViewerSlotLimits;
  readonly #holders = new Map<string, Slot>();
  readonly #rooms = new Map<string, number>();
  readonly #links = new Map<string, number>();

  constructor(limits: ViewerSlotLimits) {
    if (!(limits.perRoom >= 1 && limits.perLink >= 1)) throw new TypeError('ViewerSlots: limits must be >= 1');
    this.#limits = limits;
  }

  /** Viewers holding a slot in `roomId`. */
  inRoom(roomId: string): number {
    return this.#rooms.get(roomId) ?? 0;
  }

  /** Viewers holding a slot with `link`. */
  onLink(link: string): number {
    return this.#links.get(link) ?? 0;
  }

  /** Live holders (all rooms). */
  get size(): number {
    return this.#holders.size;
  }

  /**
   * Takes a slot for `holder` in `roomId` with `link` (a holder that already has one gives it back first).
   * @throws AppError('VIEWER_LIMIT') when the room or the link is full; nothing is taken then.
   */
  take(holder: string, roomId: string, link: string): void {
    this.release(holder);
    if (this.inRoom(roomId) >= this.#limits.perRoom)
      throw new AppError('VIEWER_LIMIT', `this room has its most viewers (${this.#limits.perRoom}); try again later`);
    if (this.onLink(link) >= this.#limits.perLink) {
      throw new AppError(
        'VIEWER_LIMIT',
        `this link has its most viewers at once (${this.#limits.perLink}); ask the room's owner for another link`,
      );
    }
    this.#holders.set(holder, { roomId, link });
    this.#rooms.set(roomId, this.inRoom(roomId) + 1);
    this.#links.set(link, this.onLink(link) + 1);
  }

  /** Gives back `holder`'s slot; no-op when it holds none. */
  release(holder: string): void {
    const s = this.#holders.get(holder);
    if (!s) return;
    this.#holders.delete(holder);
    dec(this.#rooms, s.roomId);
    dec(this.#links, s.link);
  }
}

function dec(m: Map<string, number>, k: string): void {
  const n = (m.get(k) ?? 0) - 1;
  if (n > 0) m.set(k, n);
  else m.delete(k);
}
