import { describe, expect, it } from 'vitest';
import { AudioDelayLine, LatencyEstimator, type AudioChunk } from '../../server/media/audioDelay.js';

function chunk(n: number): AudioChunk {
  // 10 ms of 48 kHz mono whose first sample carries the chunk number.
  const samples = new Int16Array(480);
  samples[0] = n;
  return { samples, sampleRate: 48000, bitsPerSample: 16, channelCount: 1, numberOfFrames: 480 };
}

describe('AudioDelayLine', () => {
  it('holds back exactly delay/10 chunks and keeps the order', () => {
    const d = new AudioDelayLine({ stepEveryChunks: 1 });
    d.setDelay(50);
    const out: number[] = [];
    for (let i = 0; i < 20; i++) d.push(chunk(i), (c) => out.push(c.samples[0]!));
    expect(d.delayMs).toBe(50);
    expect(out).toEqual(Array.from({ length: 15 }, (_, i) => i));
    expect(d.buffered).toBe(5);
  });

  it('copies the input (the sink may reuse its buffer)', () => {
    const d = new AudioDelayLine();
    d.setDelay(10);
    const c = chunk(1);
    const out: number[] = [];
    d.push(c, (x) => out.push(x.samples[0]!));
    c.samples[0] = 99;
    d.push(chunk(2), (x) => out.push(x.samples[0]!));
    expect(out).toEqual([1]);
  });

  it('moves towards a new delay one chunk at a time, no faster than stepEveryChunks', () => {
    const d = new AudioDelayLine({ stepEveryChunks: 10 });
    d.setDelay(0);
    let emitted = 0;
    for (let i = 0; i < 5; i++) d.push(chunk(i), () => emitted++);
    expect(d.delayMs).toBe(0);
    d.setDelay(30);
    for (let i = 0; i < 100; i++) d.push(chunk(i), () => emitted++);
    expect(d.delayMs).toBe(30);
    expect(d.buffered).toBe(3);
    d.setDelay(0);
    for (let i = 0; i < 9; i++) d.push(chunk(i), () => emitted++);
    expect(d.delayMs).toBe(20); // only one step so far
    expect(emitted).toBe(105 + 9 - 2);
  });

  it('clamps to maxDelayMs and never grows past its ring', () => {
    const d = new AudioDelayLine({ maxDelayMs: 100, stepEveryChunks: 1 });
    d.setDelay(10_000);
    for (let i = 0; i < 1000; i++) d.push(chunk(i), () => undefined);
    expect(d.delayMs).toBe(100);
    expect(d.buffered).toBe(10);
  });
});

describe('LatencyEstimator', () => {
  it('starts at the first sample and follows slowly', () => {
    const e = new LatencyEstimator(0.1);
    expect(e.value).toBe(0);
    e.add(100);
    expect(e.value).toBe(100);
    e.add(200);
    expect(e.value).toBeCloseTo(110);
    e.add(Number.NaN);
    e.add(-5);
    expect(e.value).toBeCloseTo(110);
  });
});
