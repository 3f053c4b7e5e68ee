/**
 * Small helpers around @roamhq/wrtc shared by the ingest peer and the fan-outs: creating a peer connection,
 * answering after ICE gathering, adding filtered remote candidates.
 */
import wrtc from '@roamhq/wrtc';
import type { IceCandidate, IceServer, SessionDescription } from '../types/protocol.js';
import { AppError } from '../errors.js';
import { candidateAllowed, filterSdpCandidates } from './candidates.js';

export { wrtc };

/** How long an answer waits for ICE gathering to complete before it is sent with the candidates found so far. */
export const ICE_GATHER_TIMEOUT_MS = 3000;

/** Resolves when the peer's ICE gathering is complete, or after `timeoutMs` (never rejects). */
export function waitIceGathering(pc: RTCPeerConnection, timeoutMs: number = ICE_GATHER_TIMEOUT_MS): Promise<void> {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', onChange);
      pc.removeEventListener('icecandidate', onCandidate);
      resolve();
    };
    const onChange = (): void => {
      if (pc.iceGatheringState === 'complete') done();
    };
    const onCandidate = (e: RTCPeerConnectionIceEvent): void => {
      if (!e.candidate) done();
    };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', onChange);
    pc.addEventListener('icecandidate', onCandidate);
  });
}

/**
 * Applies a remote offer, creates the answer, waits for ICE gathering and returns the answer with its candidates
 * filtered by `allow`. `before` runs between setRemoteDescription and createAnswer (to attach tracks).
 * @throws AppError('INVALID_SDP') when the offer is refused.
 */
export async function answerOffer(
  pc: RTCPeerConnection,
  offerSdp: string,
  allow: readonly string[] | null,
  before?: () => void | Promise<void>,
): Promise<SessionDescription> {
  try {
    await pc.setRemoteDescription({ type: 'offer', sdp: filterSdpCandidates(offerSdp, allow) });
  } catch (err) {
    throw new AppError('INVALID_SDP', 'the offer was refused by the media stack', { cause: err });
  }
  await before?.();
  const answer = await pc.createAnswer();
  await pc.setLocalDescription(answer);
  if (pc.signalingState !== 'closed') await waitIceGathering(pc);
  const sdp = pc.localDescription?.sdp;
  // Closed while it gathered: its connection failed at once (an offer whose candidates cannot be reached) and its
  // owner closed it, or its client left. Not a server failure, and its answer (if any) is of no use.
  if (pc.signalingState === 'closed')
    throw new AppError('INVALID_STATE', 'the connection failed or was closed before its answer was ready');
  if (!sdp) throw new AppError('INTERNAL', 'no local description after createAnswer');
  return { type: 'answer', sdp: filterSdpCandidates(sdp, allow) };
}

/**
 * Adds a trickled remote candidate; candidates whose address is not allowed are ignored, `null` (end of
 * candidates) is accepted and ignored.
 * @throws AppError('INVALID_MESSAGE') for a candidate the peer refuses.
 */
export async function addRemoteCandidate(
  pc: RTCPeerConnection,
  c: IceCandidate | null,
  allow: readonly string[] | null,
): Promise<void> {
  if (!c || !c.candidate) return;
  if (!candidateAllowed(c.candidate, allow)) return;
  try {
    await pc.addIceCandidate({
      candidate: c.candidate,
      sdpMid: c.sdpMid ?? null,
      sdpMLineIndex: c.sdpMLineIndex ?? null,
    });
  } catch (err) {
    throw new AppError('INVALID_MESSAGE', 'ICE candidate refused', { cause: err });
  }
}

/**
 * Creates a server-side peer connection. Without ICE servers it gathers host candidates only (the server is reached
 * directly, or through the TURN relay the client uses); with them (config.media.serverPeersUseIce) it also gathers
 * server-reflexive and relay candidates, for a server behind NAT.
 */
export function createPeerConnection(iceServers: readonly IceServer[] = []): RTCPeerConnection {
  return new wrtc.RTCPeerConnection({ iceServers: iceServers.map((s) => ({ ...s })) });
}

/** Restricts a video transceiver to VP8 (+ RTX), the codec the project streams everywhere; ignored if unsupported. */
export function preferVp8(t: RTCRtpTransceiver): boolean {
  try {
    const caps = wrtc.RTCRtpSender.getCapabilities('video');
    const codecs = caps?.codecs.filter((c) => /^video\/(vp8|rtx)$/i.test(c.mimeType)) ?? [];
    if (!codecs.some((c) => /vp8/i.test(c.mimeType))) return false;
    t.setCodecPreferences(codecs);
    return true;
  } catch {
    return false;
  }
}
