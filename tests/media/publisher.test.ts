import { afterEach, describe, expect, it } from 'vitest';
import { Publisher } from '../../server/media/publisher.js';
import { createLogger } from '../../server/logger.js';
import { makeI420, waitFor } from './helpers.js';

const pubs: Publisher[] = [];
afterEach(() => {
  for (const p of pubs.splice(0)) p.close();
});

function open(offset = 0): Publisher {
  const p = new Publisher({ log: createLogger('test.publisher'), audioDelayOffsetMs: offset, idleIntervalMs: 50 });
  pubs.push(p);
  return p;
}

describe('Publisher', () => {
  it('delays audio by the measured video latency plus the configured offset', () => {
    const p = open(20);
    const chunk = {
      samples: new Int16Array(480),
      sampleRate: 48000,
      bitsPerSample: 16,
      channelCount: 1,
      numberOfFrames: 480,
    };
    const frame = makeI420(64, 48);
    // 5 s of 30 fps video that took 100 ms from receive to publish, with the matching 10 ms audio chunks.
    for (let i = 0; i < 500; i++) {
      if (i % 3 === 0) p.publishVideo(frame, 100);
      p.pushAudio(chunk);
    }
    expect(p.videoLatencyMs).toBeCloseTo(100, 0);
    expect(p.audioDelayMs).toBe(120);
    // Everything but the delayed chunks has left.
    expect(p.audioChunksSent).toBe(500 - 12);
  });

  it('resends the idle frame while nothing is published, and stops when closed', async () => {
    const p = open();
    p.setIdleFrame(makeI420(64, 48));
    const first = p.framesSent;
    expect(first).toBe(1);
    await waitFor(() => p.framesSent >= first + 3, 5000, 'idle resends');
    p.close();
    p.close();
    const after = p.framesSent;
    expect(p.closed).toBe(true);
    p.publishVideo(makeI420(64, 48), 10);
    expect(p.framesSent).toBe(after);
  });
});
