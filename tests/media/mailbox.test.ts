import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { FrameExchange, Meta, META_WORDS } from '../../server/avatar/mailbox.js';
import { i420Bytes } from '../../server/types/image.js';

function write(x: FrameExchange, seq: number, fill: number, bytes = x.capacity): boolean {
  const w = x.writable();
  w.data.fill(fill, 0, bytes);
  w.meta[Meta.seq] = seq;
  w.meta[Meta.bytes] = bytes;
  return x.publish();
}

describe('FrameExchange (latest-frame-wins triple buffer)', () => {
  it('hands over the newest frame and counts the ones it replaced', () => {
    const writer = new FrameExchange(16);
    const reader = new FrameExchange(16, writer.buffer); // the other thread's view of the same memory
    expect(reader.take()).toBeNull();
    expect(write(writer, 1, 1)).toBe(false);
    expect(write(writer, 2, 2)).toBe(true);
    expect(write(writer, 3, 3)).toBe(true);
    expect(writer.dropped).toBe(2);
    expect(reader.pending).toBe(true);
    const f = reader.take()!;
    expect(f.meta[Meta.seq]).toBe(3);
    expect([...f.data]).toEqual(new Array(16).fill(3));
    expect(reader.take()).toBeNull();
    expect(write(writer, 4, 4, 8)).toBe(false);
    const g = reader.take()!;
    expect(g.meta[Meta.seq]).toBe(4);
    expect(g.data.length).toBe(8);
  });

  it('never gives the writer the slot the reader holds', () => {
    const writer = new FrameExchange(4);
    const reader = new FrameExchange(4, writer.buffer);
    for (let i = 1; i < 200; i++) {
      write(writer, i, i & 255);
      if (i % 3 === 0) {
        const held = reader.take()!;
        // Whatever the writer does next, the held slot keeps its content.
        for (let k = 0; k < 3; k++) {
          expect(writer.writable().slot).not.toBe(held.slot);
          write(writer, 1000 + k, 0);
        }
        expect(held.data[0]).toBe(i & 255);
      }
    }
  });

  it('keeps frames intact between two real threads under a flood', async () => {
    const cap = 4096;
    const x = new FrameExchange(cap);
    // The reader thread checks that every frame it takes is uniform (no torn writes) and that sequence numbers rise.
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      const W = workerData.metaWords;
      const meta = (i) => new Float64Array(workerData.buffer, 8 + i * W * 8, W);
      const data = (i) => new Uint8Array(workerData.buffer, 8 + 3 * W * 8 + i * workerData.cap, workerData.cap);
      const ctrl = new Int32Array(workerData.buffer, 0, 1);
      const done = new Int32Array(workerData.done);
      let r = 2, last = 0, taken = 0, torn = 0, backwards = 0;
      parentPort.postMessage('ready');
      const t0 = Date.now();
      while (taken < 200 && Date.now() - t0 < 10000) {
        if ((Atomics.load(ctrl, 0) & 4) === 0) continue;
        r = Atomics.exchange(ctrl, 0, r) & 3;
        const m = meta(r), d = data(r), seq = m[0];
        for (let k = 0; k < d.length; k++) if (d[k] !== (seq & 255)) { torn++; break; }
        if (seq <= last) backwards++;
        last = seq; taken++;
      }
      Atomics.store(done, 0, 1);
      parentPort.postMessage({ taken, torn, backwards, last });
    `;
    const done = new SharedArrayBuffer(4);
    const w = new Worker(code, { eval: true, workerData: { buffer: x.buffer, cap, done, metaWords: META_WORDS } });
    const messages: unknown[] = [];
    w.on('message', (m) => messages.push(m));
    const failed = new Promise<never>((_, reject) => w.once('error', reject));
    const until = (n: number): Promise<void> =>
      Promise.race([
        failed,
        (async () => {
          while (messages.length < n) await new Promise((r) => setTimeout(r, 5));
        })(),
      ]);
    await until(1); // the reader is running
    let seq = 0;
    const t0 = Date.now();
    const flag = new Int32Array(done);
    // Write as fast as possible until the reader has checked 200 frames (bounded, for a starved machine).
    while (Atomics.load(flag, 0) === 0 && Date.now() - t0 < 15_000) write(x, ++seq, seq & 255);
    await until(2);
    const r = messages[1] as { taken: number; torn: number; backwards: number; last: number };
    await w.terminate();
    expect(r.taken).toBe(200);
    expect(r.torn).toBe(0);
    expect(r.backwards).toBe(0);
    expect(x.dropped).toBeGreaterThan(0);
    expect(r.taken + x.dropped).toBeLessThanOrEqual(seq);
  });

  it('refuses bad sizes', () => {
    expect(() => new FrameExchange(0)).toThrow(TypeError);
    expect(() => new FrameExchange(16, new SharedArrayBuffer(8))).toThrow(TypeError);
    expect(i420Bytes(8, 6)).toBe(8 * 6 + 2 * 4 * 3);
    expect(i420Bytes(7, 5)).toBe(7 * 5 + 2 * 4 * 3);
  });
});
