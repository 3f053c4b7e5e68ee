/**
 * Fan-out selection, once per process at start-up (createFanoutFactory):
 * - 'direct': never tries mediasoup; every viewer gets its own server-side peer connection (DirectFanout).
 * - 'sfu': starts a mediasoup worker or fails start-up with a clear error.
 * - 'auto': tries a mediasoup worker, falls back to direct; ONE log line says which and why.
 * Rooms always keep a DirectFanout (it always works); with 'sfu' they also create an SFU room (a mediasoup Router
 * fed with the room's synthesized tracks) that viewers consume through their own WebRtcTransports.
 */
import type { Config } from '../config.js';
import type { Logger } from '../logger.js';
import { AppError } from '../errors.js';
import type { FanoutFactory, SfuRoomFanout, SfuWorkerInfo } from './fanoutTypes.js';

class DirectOnlyFactory implements FanoutFactory {
  readonly kind = 'direct' as const;
  readonly reason: string;
  constructor(reason: string) {
    this.reason = reason;
  }
  createSfuRoom(): Promise<SfuRoomFanout> {
    return Promise.reject(new AppError('UNSUPPORTED', 'this server runs without an SFU (direct fan-out)'));
  }
  workers(): SfuWorkerInfo[] {
    return [];
  }
  close(): Promise<void> {
    // Nothing to release.
    return Promise.resolve();
  }
}

/**
 * Picks the fan-out for this process from config.fanout.mode (see the module comment).
 * @throws AppError('CONFIG_INVALID') in 'sfu' mode when no mediasoup worker can be started.
 */
export async function createFanoutFactory(config: Config, log: Logger): Promise<FanoutFactory> {
  const mode = config.fanout.mode;
  if (mode === 'direct') {
    const f = new DirectOnlyFactory('fanout.mode is "direct"');
    log.info('fan-out: direct peers', { reason: f.reason });
    return f;
  }
  try {
    // Loaded only when wanted: 'direct' servers never touch mediasoup.
    const { startMediasoup } = await import('./mediasoupFanout.js');
    const f = await startMediasoup(config, log);
    log.info('fan-out: mediasoup SFU', { reason: f.reason });
    return f;
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    if (mode === 'sfu') {
      throw new AppError(
        'CONFIG_INVALID',
        `fanout.mode is "sfu" but no mediasoup worker could be started: ${why} (run npm run mediasoup:worker, or set MEDIASOUP_WORKER_BIN)`,
        { cause: err },
      );
    }
    const f = new DirectOnlyFactory(`mediasoup worker not available (${why})`);
    log.info('fan-out: direct peers (fallback)', { reason: f.reason });
    return f;
  }
}
