import { describe, expect, it } from 'vitest';
import { FrameSlots, LatestMailbox, i420Bytes } from '../../server/media/mailbox.js';

describe('LatestMailbox', () => {
  it('keeps only the newest item and counts each replacement as a drop', () => {
    const m = new LatestMailbox<number>();
    expect(m.take()).toBeUndefined();
    expect(m.put(1)).toBeUndefined();
    expect(m.put(2)).toBe(1);
    expect(m.put(3)).toBe(2);
    expect(m.dropped).toBe(2);
    expect(m.pending).toBe(true);
    expect(m.take()).toBe(3);
    expect(m.pending).toBe(false);
    expect(m.take()).toBeUndefined();
    m.put(4);
    m.clear();
    expect(m.take()).toBeUndefined();
    expect(m.dropped).toBe(2);
  });

  it('never grows: a flood of puts holds one item', () => {
    const m = new LatestMailbox<Uint8Array>();
    for (let i = 0; i < 10_000; i++) m.put(new Uint8Array([i & 255]));
    expect(m.dropped).toBe(9_999);
    expect(m.take()![0]).toBe(9_999 & 255);
  });
});

describe('FrameSlots', () => {
  it('round-trips frames through shared memory, per slot', () => {
    const w = 8;
    const h = 6;
    const bytes = i420Bytes(w, h);
    expect(bytes).toBe(8 * 6 + 2 * 4 * 3);
    const a = new FrameSlots(2, bytes);
    const b = new FrameSlots(2, bytes, a.buffer); // the worker's view of the same memory
    const f0 = new Uint8Array(bytes).fill(7);
    const f1 = new Uint8Array(bytes).map((_, i) => i);
    a.write(0, 11, w, h, f0);
    a.write(1, 12, w, h, f1);
    const r0 = b.read(0);
    const r1 = b.read(1);
    expect([r0.seq, r0.width, r0.height, r0.data.length]).toEqual([11, w, h, bytes]);
    expect([...r0.data]).toEqual([...f0]);
    expect(r1.seq).toBe(12);
    expect([...r1.data]).toEqual([...f1]);
  });

  it('refuses frames larger than a slot and bad slot numbers', () => {
    const s = new FrameSlots(2, 16);
    expect(() => s.write(0, 1, 4, 4, new Uint8Array(17))).toThrow(RangeError);
    expect(() => s.read(2)).toThrow(RangeError);
    expect(() => new FrameSlots(2, 16, new SharedArrayBuffer(8))).toThrow(TypeError);
  });
});
