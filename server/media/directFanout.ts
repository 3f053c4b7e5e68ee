/**
 * Direct fan-out: one server-side peer connection per viewer, each sending the publisher's video and audio tracks.
 * Always available (no SFU needed); every viewer costs its own VP8 encode, so it suits a few viewers per room.
 * The video bitrate per viewer is capped with b=AS in the viewer's offer (libwebrtc limits what it sends to what
 * the remote description says it will receive).
 */
import type { Logger } from '../logger.js';
import type { IceCandidate, IceServer, SessionDescription } from '../types/protocol.js';
import { AppError } from '../errors.js';
import { sdpMediaKinds, setVideoBandwidth } from './candidates.js';
import { addRemoteCandidate, answerOffer, createPeerConnection, preferVp8, wrtc } from './rtc.js';
import type { Publisher } from './publisher.js';
import { SafeEventEmitter } from '../util/events.js';

export interface DirectFanoutOptions {
  publisher: Publisher;
  iceAddressAllowList: string[] | null;
  /** The ICE servers of each new viewer peer (called per viewer: fresh TURN credentials); default none. */
  iceServers?: () => IceServer[];
  maxVideoBitrate: number;
  /**
   * A viewer whose peer has not connected this long after its offer is removed (its slot and encode given back);
   * default 30 s.
   */
  connectTimeoutMs?: number;
  log: Logger;
}

interface Viewer {
  id: string;
  pc: RTCPeerConnection;
  /** The connect deadline (cleared once connected or removed). */
  deadline: ReturnType<typeof setTimeout> | null;
}

/** What a DirectFanout emits. */
export interface DirectFanoutEvents {
  /** A viewer was added or removed (not emitted by close()). */
  viewers: [count: number];
  /** Emitted once, by close(). */
  close: [];
}

export class DirectFanout extends SafeEventEmitter<DirectFanoutEvents> {
  readonly kind = 'direct' as const;
  readonly #opts: DirectFanoutOptions;
  readonly #viewers = new Map<string, Viewer>();
  #closed = false;

  constructor(opts: DirectFanoutOptions) {
    super();
    this.#opts = opts;
  }

  get closed(): boolean {
    return this.#closed;
  }
  get viewerCount(): number {
    return this.#viewers.size;
  }
  viewerIds(): string[] {
    return [...this.#viewers.keys()];
  }

  /**
   * Answers a viewer's recvonly offer with the room's video and audio tracks. A viewer id that is already
   * connected is replaced (a reconnecting viewer).
   * @throws AppError('INVALID_SDP') for an offer without video or one libwebrtc refuses.
   */
  async addViewer(viewerId: string, offer: SessionDescription): Promise<SessionDescription> {
    if (this.#closed) throw new AppError('INVALID_STATE', 'room closed');
    if (offer.type !== 'offer' || typeof offer.sdp !== 'string' || !sdpMediaKinds(offer.sdp).includes('video')) {
      throw new AppError('INVALID_SDP', 'expected an SDP offer with a video section');
    }
    this.removeViewer(viewerId);
    const { publisher, iceAddressAllowList, maxVideoBitrate, log } = this.#opts;
    const pc = createPeerConnection(this.#opts.iceServers?.());
    const viewer: Viewer = { id: viewerId, pc, deadline: null };
    this.#viewers.set(viewerId, viewer);
    this.safeEmit('viewers', this.#viewers.size);
    const timeoutMs = this.#opts.connectTimeoutMs ?? 30_000;
    viewer.deadline = setTimeout(() => {
      viewer.deadline = null;
      if (this.#viewers.get(viewerId) !== viewer || pc.connectionState === 'connected') return;
      log.info('viewer did not connect in time', { viewerId, timeoutMs, state: pc.connectionState });
      this.removeViewer(viewerId);
    }, timeoutMs);
    viewer.deadline.unref?.();
    pc.addEventListener('connectionstatechange', () => {
      const s = pc.connectionState;
      log.debug('viewer connection state', { viewerId, state: s });
      if (s === 'connected' && viewer.deadline) {
        clearTimeout(viewer.deadline);
        viewer.deadline = null;
      }
      // 'disconnected' may recover; 'failed' and 'closed' do not.
      if ((s === 'failed' || s === 'closed') && this.#viewers.get(viewerId) === viewer) this.removeViewer(viewerId);
    });
    try {
      const stream = new wrtc.MediaStream([publisher.videoTrack, publisher.audioTrack]);
      const answer = await answerOffer(pc, setVideoBandwidth(offer.sdp, maxVideoBitrate), iceAddressAllowList, () => {
        for (const t of pc.getTransceivers()) {
          const kind = t.receiver.track.kind;
          if (kind === 'video') preferVp8(t);
          if (kind === 'video' || kind === 'audio')
            pc.addTrack(kind === 'video' ? publisher.videoTrack : publisher.audioTrack, stream);
        }
      });
      await this.#tuneVideoSender(pc, viewerId);
      return answer;
    } catch (err) {
      if (this.#viewers.get(viewerId) === viewer) this.removeViewer(viewerId);
      // The viewer left (its socket closed) or was replaced while its offer was being answered: its peer was closed
      // under us, which libwebrtc reports as an InvalidStateError. A client's own doing, not a server failure.
      else if (!(err instanceof AppError))
        throw new AppError('INVALID_STATE', 'the viewer left before its offer was answered', { cause: err });
      throw err;
    }
  }

  /**
   * Keeps the portrait's resolution under CPU pressure (libwebrtc would otherwise scale the picture down; a lower
   * frame rate is the better trade for a face) and caps the bitrate on the sender as well as through b=AS.
   */
  async #tuneVideoSender(pc: RTCPeerConnection, viewerId: string): Promise<void> {
    const sender = pc.getSenders().find((s) => s.track?.kind === 'video');
    if (!sender) return;
    try {
      const p = sender.getParameters() as RTCRtpSendParameters & { degradationPreference?: string };
      p.degradationPreference = 'maintain-resolution';
      for (const e of p.encodings ?? []) e.maxBitrate = this.#opts.maxVideoBitrate;
      await sender.setParameters(p);
    } catch (err) {
      this.#opts.log.debug('video sender parameters not applied', { viewerId, err: err as Error });
    }
  }

  async addIceCandidate(viewerId: string, c: IceCandidate | null): Promise<void> {
    const v = this.#viewers.get(viewerId);
    if (!v) throw new AppError('INVALID_STATE', 'no view session for this viewer');
    await addRemoteCandidate(v.pc, c, this.#opts.iceAddressAllowList);
  }

  /** Closes a viewer's peer connection (no-op for an unknown id). */
  removeViewer(viewerId: string): void {
    const v = this.#viewers.get(viewerId);
    if (!v) return;
    this.#viewers.delete(viewerId);
    if (v.deadline) clearTimeout(v.deadline);
    v.pc.close();
    this.safeEmit('viewers', this.#viewers.size);
  }

  /** Closes every viewer. Idempotent; emits 'close' once. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const v of this.#viewers.values()) {
      if (v.deadline) clearTimeout(v.deadline);
      v.pc.close();
    }
    this.#viewers.clear();
    this.safeEmit('close');
  }
}
