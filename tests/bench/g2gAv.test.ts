/**
 * The glass-to-glass benchmark's audio/video offset: the fake microphone file (tone bursts at given samples) and the
 * pairing of switches with bursts at both ends (drift of the fake camera followed, a missing burst skipped).
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { measureAvOffsets, type SwitchResult } from '../../benchmarks/glass-to-glass.js';
import { writeBurstWav } from '../helpers/g2gMedia.js';

const sw = (index: number, sentT: number, delayMs: number | null): SwitchResult => ({
  index,
  toOpen: index % 2 === 0,
  sentT,
  changeT: delayMs === null ? null : sentT + delayMs,
  delayMs,
  delayFromPresentationMs: delayMs,
});

describe('glass-to-glass A/V offset', () => {
  it('writes a 16-bit mono wav: silence with a burst at each onset', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'g2g-wav-'));
    try {
      const out = await writeBurstWav({ out: path.join(dir, 'a.wav'), samples: 48_000, onsets: [4800, 24_000] });
      const buf = await readFile(out);
      expect(buf.toString('ascii', 0, 4)).toBe('RIFF');
      expect(buf.readUInt32LE(24)).toBe(48_000);
      expect(buf.readUInt16LE(34)).toBe(16);
      const pcm = new Int16Array(buf.buffer, buf.byteOffset + 44, 48_000);
      const peak = (from: number, to: number): number => Math.max(...Array.from(pcm.subarray(from, to), Math.abs));
      expect(peak(0, 4800)).toBe(0);
      expect(peak(4800, 4800 + 48 * 80)).toBeGreaterThan(10_000);
      expect(peak(4800 + 48 * 81, 24_000)).toBe(0);
      expect(peak(24_000, 24_000 + 48 * 80)).toBeGreaterThan(10_000);
      await expect(writeBurstWav({ out: path.join(dir, 'b.wav'), samples: 100, onsets: [200] })).rejects.toThrow(
        RangeError,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('pairs each switch with its burst at both ends, following the camera drift, and skips unpaired ones', () => {
    const switches: SwitchResult[] = [];
    const perf: { t: number; level: number }[] = [];
    const view: { t: number; level: number }[] = [];
    for (let k = 0; k < 10; k++) {
      const sentT = 10_000 + k * 1000;
      switches.push(sw(k, sentT, k === 4 ? null : 100));
      // The microphone's burst: 30 ms after the camera's frame at first, the camera then falling behind 40 ms per
      // switch (the burst comes earlier and earlier relative to the frame): 390 ms apart by the end.
      const burst = sentT + 30 - 40 * k;
      if (k !== 6) perf.push({ t: burst, level: 0.5 }); // burst 6 missed at the performer
      view.push({ t: burst + 150 + (k === 2 ? 10 : 0), level: 0.4 }); // the audio path takes 150 ms
    }
    const { offsets, deviceOffsetMs } = measureAvOffsets(switches, perf, view, 1000, 800);
    // Switch 4 has no video delay, switch 6 no performer burst.
    expect(offsets.map((o) => o.index)).toEqual([0, 1, 2, 3, 5, 7, 8, 9]);
    for (const o of offsets) expect(o.offsetMs).toBeCloseTo(o.index === 2 ? 60 : 50, 5);
    expect(offsets.every((o) => o.videoDelayMs === 100)).toBe(true);
    expect(deviceOffsetMs.at(-1)).toBeCloseTo(30 - 40 * 9, 5);
  });
});
