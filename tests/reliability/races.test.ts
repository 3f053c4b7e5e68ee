/**
 * Races the fuzz run found, where a peer connection is closed under an answer being prepared; both must fail as the
 * client's doing (INVALID_STATE, HTTP 409), not as internal errors (INTERNAL, HTTP 500, "signaling handler failed"):
 * - a viewer whose socket closes while the server is still answering its offer (the signaling 'disconnect' handler
 *   removes the viewer, which closes its peer: libwebrtc's InvalidStateError from createAnswer);
 * - a peer closed while it gathers its candidates (a WHEP offer whose only reachable candidate fails at once: the
 *   fan-out closes the failed peer; answerOffer then had no local description).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../server/logger.js';
import { answerOffer, createPeerConnection } from '../../server/media/rtc.js';
import { DirectFanout } from '../../server/media/directFanout.js';
import { Publisher } from '../../server/media/publisher.js';
import { CountingViewer } from '../../benchmarks/lib/reliability.js';

const closers: (() => void)[] = [];
afterEach(() => {
  for (const c of closers.splice(0).reverse()) c();
});

describe('a viewer that leaves while its offer is answered', () => {
  it('is refused with INVALID_STATE and leaves no viewer behind', async () => {
    const log = createLogger('test');
    const publisher = new Publisher({ log, audioDelayOffsetMs: 0 });
    closers.push(() => publisher.close());
    const fanout = new DirectFanout({ publisher, iceAddressAllowList: ['127.0.0.1'], maxVideoBitrate: 1_000_000, log });
    closers.push(() => fanout.close());
    const client = new CountingViewer();
    closers.push(() => client.close());
    const offer = await client.offer();
    for (let i = 0; i < 5; i++) {
      const pending = fanout.addViewer('v1', offer);
      // What the signaling's 'disconnect' handler does for the viewer's socket.
      fanout.removeViewer('v1');
      await expect(pending).rejects.toMatchObject({ code: 'INVALID_STATE' });
      expect(fanout.viewerCount).toBe(0);
    }
    // The same viewer can still view afterwards.
    await expect(fanout.addViewer('v1', offer)).resolves.toMatchObject({ type: 'answer' });
    expect(fanout.viewerCount).toBe(1);
  });
});

describe('a peer closed while it gathers its candidates', () => {
  it('answerOffer fails with INVALID_STATE', async () => {
    const client = new CountingViewer();
    closers.push(() => client.close());
    const offer = await client.offer();
    // Closed right as gathering starts (what the fan-out does when the peer fails at once). Closing it from an
    // icegatheringstatechange listener raced the gathering itself on a loaded machine (the answer could be complete
    // before the event was dispatched), so the close comes right after the local description is set.
    const closeWhileGathering = (): RTCPeerConnection => {
      const pc = createPeerConnection();
      closers.push(() => pc.close());
      const setLocal = pc.setLocalDescription.bind(pc);
      pc.setLocalDescription = async (d?: RTCLocalSessionDescriptionInit): Promise<void> => {
        await setLocal(d);
        pc.close();
      };
      return pc;
    };
    await expect(answerOffer(closeWhileGathering(), offer.sdp, ['127.0.0.1'])).rejects.toMatchObject({
      code: 'INVALID_STATE',
    });
    // And without a close the same offer is answered (the case is about the close, not the offer).
    const open = createPeerConnection();
    closers.push(() => open.close());
    await expect(answerOffer(open, offer.sdp, ['127.0.0.1'])).resolves.toMatchObject({ type: 'answer' });
  });
});
