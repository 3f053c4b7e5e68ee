/**
 * One direct WebRTC peer connection to the server, for publishing (sendonly) or viewing (recvonly).
 * It owns the RTCPeerConnection: trickles its own ICE candidates once the server's answer is applied (the server
 * only knows the peer after answering), and reports a failed connection once through `onFailed` so the client can
 * rebuild it with backoff.
 */
import type { IceCandidate, SessionDescription } from '../../server/signaling/protocol.js';
import { ClientError } from './errors.js';

export type PeerKind = 'publish' | 'view';

export interface DirectPeerOptions {
  kind: PeerKind;
  iceServers: RTCIceServer[];
  /** Sends one of our candidates (null = end of candidates) to the server. */
  sendCandidate: (c: IceCandidate | null) => void;
  /** Exchanges our offer for the server's answer. */
  negotiate: (offer: SessionDescription) => Promise<SessionDescription>;
  /** Called once when the connection fails (or stays disconnected past the grace period). */
  onFailed: (why: string) => void;
  /** Keep only local candidates for which this returns true; default all. */
  candidateFilter?: ((c: RTCIceCandidate) => boolean) | undefined;
  /** How long 'disconnected' may last before it counts as failed; default 5 s. */
  disconnectedGraceMs?: number | undefined;
  /**
   * Preferred receive jitter buffer, ms (RTCRtpReceiver.jitterBufferTarget); undefined = the browser's adaptive
   * default. 0 asks for the least delay the network allows.
   */
  jitterBufferTargetMs?: number | undefined;
  /** How long connecting may take; default 20 s. */
  connectTimeoutMs?: number | undefined;
}

export class DirectPeer {
  readonly pc: RTCPeerConnection;
  /** The received tracks (view) or the sent stream's tracks (publish). */
  readonly stream: MediaStream;
  readonly kind: PeerKind;
  readonly #opts: DirectPeerOptions;
  #closed = false;
  #failed = false;
  #answered = false;
  readonly #pending: (IceCandidate | null)[] = [];
  #disconnectTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(opts: DirectPeerOptions) {
    this.#opts = opts;
    this.kind = opts.kind;
    this.stream = new MediaStream();
    this.pc = new RTCPeerConnection({
      iceServers: opts.iceServers,
      bundlePolicy: 'max-bundle',
      rtcpMuxPolicy: 'require',
    });
    this.pc.onicecandidate = (e) => this.#onCandidate(e.candidate);
    this.pc.onconnectionstatechange = () => this.#onState();
    this.pc.ontrack = (e) => {
      setJitterBufferTarget(e.receiver, opts.jitterBufferTargetMs);
      if (!this.stream.getTracks().includes(e.track)) this.stream.addTrack(e.track);
    };
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Offers `stream`'s tracks sendonly and waits until connected. */
  async publish(stream: MediaStream): Promise<void> {
    for (const track of stream.getTracks()) {
      // One stream id per track: in one stream the server's receiver would hold video back to lip-sync it with the
      // audio (tens of ms); the server syncs the output itself (it delays the audio by the measured video latency).
      this.pc.addTransceiver(track, { direction: 'sendonly', streams: [new MediaStream([track])] });
      this.stream.addTrack(track);
    }
    await this.#negotiate();
  }

  /** Offers recvonly video (+ audio unless `audio` is false) and waits until connected; tracks land in `stream`. */
  async view(audio = true): Promise<MediaStream> {
    this.pc.addTransceiver('video', { direction: 'recvonly' });
    if (audio) this.pc.addTransceiver('audio', { direction: 'recvonly' });
    await this.#negotiate();
    return this.stream;
  }

  /** A candidate the server sent for this peer. */
  async addRemoteCandidate(c: IceCandidate | null): Promise<void> {
    if (this.#closed) return;
    await this.pc.addIceCandidate(c ?? undefined);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#disconnectTimer) clearTimeout(this.#disconnectTimer);
    this.pc.onicecandidate = null;
    this.pc.onconnectionstatechange = null;
    this.pc.ontrack = null;
    this.pc.close();
  }

  async #negotiate(): Promise<void> {
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    const local = this.pc.localDescription;
    if (!local) throw new ClientError('MEDIA', 'no local description');
    const answer = await this.#opts.negotiate({ type: 'offer', sdp: local.sdp });
    if (this.#closed) throw new ClientError('CLOSED', 'peer closed while negotiating');
    await this.pc.setRemoteDescription(answer);
    this.#answered = true;
    for (const c of this.#pending.splice(0)) this.#opts.sendCandidate(c);
    await this.#waitConnected();
  }

  #waitConnected(): Promise<void> {
    const timeoutMs = this.#opts.connectTimeoutMs ?? 20_000;
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const s = this.pc.connectionState;
        if (s === 'connected') {
          done();
          resolve();
          return true;
        }
        if (this.#closed || s === 'failed' || s === 'closed') {
          done();
          reject(
            new ClientError(
              this.#closed ? 'CLOSED' : 'MEDIA',
              `${this.kind} connection ${this.#closed ? 'closed' : s}`,
            ),
          );
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        done();
        reject(new ClientError('TIMEOUT', `${this.kind} connection did not connect in ${timeoutMs} ms`));
      }, timeoutMs);
      const poll = setInterval(check, 50);
      const done = (): void => {
        clearTimeout(timer);
        clearInterval(poll);
      };
      check();
    });
  }

  #onCandidate(c: RTCIceCandidate | null): void {
    if (this.#closed) return;
    if (c && this.#opts.candidateFilter && !this.#opts.candidateFilter(c)) return;
    const msg: IceCandidate | null = c
      ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex }
      : null;
    if (this.#answered) this.#opts.sendCandidate(msg);
    else this.#pending.push(msg);
  }

  #onState(): void {
    const s = this.pc.connectionState;
    if (s === 'connected') {
      if (this.#disconnectTimer) clearTimeout(this.#disconnectTimer);
      this.#disconnectTimer = null;
    } else if (s === 'failed') {
      this.#fail('ICE/DTLS failed');
    } else if (s === 'disconnected' && !this.#disconnectTimer) {
      // 'disconnected' often heals by itself (a lost packet burst); only rebuild when it lasts.
      this.#disconnectTimer = setTimeout(() => {
        this.#disconnectTimer = null;
        if (this.pc.connectionState !== 'connected') this.#fail('disconnected too long');
      }, this.#opts.disconnectedGraceMs ?? 5000);
    }
  }

  #fail(why: string): void {
    if (this.#closed || this.#failed) return;
    this.#failed = true;
    this.#opts.onFailed(why);
  }
}

/** Sets RTCRtpReceiver.jitterBufferTarget where the browser has it (Chrome 114+, Firefox 125+, Safari 18+). */
export function setJitterBufferTarget(receiver: RTCRtpReceiver, ms: number | undefined): void {
  if (ms === undefined || !('jitterBufferTarget' in receiver)) return;
  receiver.jitterBufferTarget = Math.max(0, Math.min(4000, ms));
}
