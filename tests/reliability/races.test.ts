/**
 * Races the fuzz run found. A viewer whose socket closes while the server is still answering its offer (the
 * signaling 'disconnect' handler removes the viewer, which closes its peer connection under the pending answer):
 * the view request must fail as a client's doing (INVALID_STATE), not as an internal error (libwebrtc's
 * InvalidStateError, logged as "signaling handler failed" and answered INTERNAL), and leave no viewer behind.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../server/logger.js';
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
