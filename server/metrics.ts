/**
 * Prometheus metrics (prom-client) for one server: its own Registry, never the global default, fed only by listening
 * to the room registry and to each room's events ('frame', 'dropped', 'stats', 'close').
 *
 * Stage histograms are in SECONDS (Prometheus convention), named `avatar_<stage>_seconds`; Room reports milliseconds
 * (FrameTimings) and they are divided by 1000 here. Process metrics (CPU, memory, event loop lag, GC) come from
 * prom-client's collectDefaultMetrics, registered once per process in a registry of their own and merged in at
 * scrape time (several servers in one process, as in tests, must not register the same collectors twice).
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { RoomRegistry } from './rooms/registry.js';
import type { FrameTimings, Room } from './rooms/room.js';
import type { RoomStats } from './types/protocol.js';
import { EXPRESSION_REFUSALS, type ExpressionRefusal } from './types/expressionWire.js';

/** The timed stages of the frame path, in order. */
export const STAGES = [
  'decode',
  'queue',
  'track',
  'latent',
  'generate',
  'paste',
  'engine',
  'publish',
  'end_to_end',
] as const;
export type Stage = (typeof STAGES)[number];

const stageField: Record<Stage, keyof FrameTimings> = {
  decode: 'decodeMs',
  queue: 'queueMs',
  track: 'trackMs',
  latent: 'latentMs',
  generate: 'generateMs',
  paste: 'pasteMs',
  engine: 'engineMs',
  publish: 'publishMs',
  end_to_end: 'endToEndMs',
};

const stageHelp: Record<Stage, string> = {
  decode: 'driving frame received from the ingest sink until it is in the mailbox (decode + copy)',
  queue: 'time a driving frame waited in the mailbox',
  track: 'face tracking (box, landmarks, pose) per frame',
  latent: 'expression encoding per frame',
  generate: 'portrait generation per frame',
  paste: 'paste-back into the full portrait frame',
  engine: 'whole engine render call per frame',
  publish: 'synthesized frame handed to the video source',
  end_to_end: 'driving frame received to synthesized frame published',
};

/** Buckets for per-frame stage durations, seconds (1 ms .. 2.5 s). */
export const STAGE_BUCKETS = [
  0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5,
];

let processRegistry: Registry | null = null;
/** Process-wide default metrics (one set per process by nature: they describe the process). */
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

export class Metrics {
  readonly registry = new Registry();
  readonly #stages: Record<Stage, Histogram>;
  readonly #fps: Gauge<'room'>;
  readonly #steps: Gauge<'room'>;
  readonly #frames: Counter;
  readonly #framesNoFace: Counter;
  readonly #dropped: Counter;
  readonly #roomsCreated: Counter;
  readonly #expressionsRefused: Counter<'reason'>;
  readonly #detach: (() => void)[] = [];
  /** Detach functions of the rooms being watched, dropped when a room closes. */
  readonly #watched = new Map<string, () => void>();
  #closed = false;

  constructor(rooms: RoomRegistry) {
    const r = this.registry;
    this.#stages = Object.fromEntries(
      STAGES.map((s) => [
        s,
        new Histogram({
          name: `avatar_${s}_seconds`,
          help: `${stageHelp[s]}, seconds`,
          buckets: STAGE_BUCKETS,
          registers: [r],
        }),
      ]),
    ) as Record<Stage, Histogram>;
    this.#fps = new Gauge({
      name: 'avatar_room_fps',
      help: 'synthesized frames per second, per room',
      labelNames: ['room'],
      registers: [r],
    });
    this.#steps = new Gauge({
      name: 'avatar_refiner_steps',
      help: 'learned refiner steps running now, per room (the room setting, lowered under overload; 0 = warp only)',
      labelNames: ['room'],
      registers: [r],
    });
    this.#frames = new Counter({ name: 'avatar_frames_total', help: 'synthesized frames', registers: [r] });
    this.#framesNoFace = new Counter({
      name: 'avatar_frames_without_face_total',
      help: 'synthesized frames whose driving frame had no face',
      registers: [r],
    });
    this.#dropped = new Counter({
      name: 'avatar_dropped_frames_total',
      help: 'driving frames replaced in the mailbox before processing',
      registers: [r],
    });
    this.#roomsCreated = new Counter({ name: 'avatar_rooms_created_total', help: 'rooms created', registers: [r] });
    this.#expressionsRefused = new Counter({
      name: 'avatar_expression_messages_refused_total',
      help: 'private mode: expression messages from performers refused and dropped, by reason',
      labelNames: ['reason'],
      registers: [r],
    });
    // Every reason present from the start (at 0), so that a dashboard sees the series before the first refusal.
    for (const reason of EXPRESSION_REFUSALS) this.#expressionsRefused.inc({ reason }, 0);
    new Gauge({
      name: 'avatar_rooms',
      help: 'open rooms',
      registers: [r],
      collect() {
        this.set(rooms.size);
      },
    });
    new Gauge({
      name: 'avatar_viewers',
      help: 'connected viewers over all rooms',
      registers: [r],
      collect() {
        this.set(rooms.viewerCount());
      },
    });
    const onRoom = (room: Room): void => this.#watch(room);
    rooms.on('room', onRoom);
    this.#detach.push(() => rooms.off('room', onRoom));
    for (const room of rooms.rooms()) this.#watch(room);
  }

  /** Prometheus text exposition content type. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** The metrics text: this server's metrics plus the process metrics. */
  async text(): Promise<string> {
    return Registry.merge([processMetrics(), this.registry]).metrics();
  }

  /** Stops listening. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const d of this.#detach.splice(0)) d();
    for (const d of [...this.#watched.values()]) d();
  }

  #watch(room: Room): void {
    this.#roomsCreated.inc();
    const id = room.id;
    const onFrame = (t: FrameTimings): void => {
      for (const s of STAGES) {
        const ms = t[stageField[s]];
        if (typeof ms === 'number' && Number.isFinite(ms) && ms >= 0) this.#stages[s].observe(ms / 1000);
      }
      this.#frames.inc();
      if (!t.face) this.#framesNoFace.inc();
    };
    const onDropped = (n: number): void => {
      if (Number.isFinite(n) && n > 0) this.#dropped.inc(n);
    };
    const onRefused = (reason: ExpressionRefusal): void => this.#expressionsRefused.inc({ reason });
    const onStats = (s: RoomStats): void => {
      this.#fps.set({ room: id }, s.fps);
      this.#steps.set({ room: id }, s.refinerSteps);
    };
    const detach = (): void => {
      this.#watched.delete(id);
      room.off('frame', onFrame);
      room.off('dropped', onDropped);
      room.off('expressionRefused', onRefused);
      room.off('stats', onStats);
      room.off('close', onClose);
    };
    const onClose = (): void => {
      detach();
      // Per-room series end with the room: label sets must not grow without bound.
      this.#fps.remove({ room: id });
      this.#steps.remove({ room: id });
    };
    room.on('frame', onFrame);
    room.on('dropped', onDropped);
    room.on('expressionRefused', onRefused);
    room.on('stats', onStats);
    room.on('close', onClose);
    this.#watched.set(id, detach);
  }
}
