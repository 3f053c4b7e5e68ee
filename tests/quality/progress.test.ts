import { describe, expect, it } from 'vitest';
import { formatDuration, Progress } from '../../server/quality/progress.js';

function sink(isTTY: boolean): { chunks: string[]; isTTY: boolean; write(s: string): boolean } {
  const chunks: string[] = [];
  return { chunks, isTTY, write: (s: string) => (chunks.push(s), true) };
}

describe('Progress', () => {
  it('writes plain lines (one per 10%) when the stream is not a TTY, with fps and ETA', () => {
    let t = 0;
    const s = sink(false);
    const p = new Progress({ label: 'render', total: 100, stream: s, now: () => t });
    for (let i = 0; i < 100; i++) {
      t += 50; // 20 fps
      p.tick();
    }
    p.finish();
    expect(s.chunks.every((c) => c.endsWith('\n') && !c.includes('\r'))).toBe(true);
    expect(s.chunks.length).toBe(12); // frame 1, then 10%..100%, then the final line
    expect(s.chunks[5]).toBe('render  50/100 frames (50%)  20.0 fps  ETA 0:03\n');
    expect(s.chunks.at(-1)).toBe('render  100/100 frames (100%)  20.0 fps  done in 0:05\n');
  });

  it('redraws one line in place on a TTY, at most 10 times a second', () => {
    let t = 0;
    const s = sink(true);
    const p = new Progress({ label: 'eval', total: 30, stream: s, now: () => t });
    for (let i = 0; i < 30; i++) {
      t += 10;
      p.tick();
    }
    p.finish();
    p.finish();
    expect(s.chunks.length).toBe(4); // t=10, 110, 210 and the final line, once
    expect(s.chunks[0]!.startsWith('\reval  [')).toBe(true);
    expect(s.chunks.at(-1)).toMatch(
      /^\reval {2}\[#{24}\] {2}30\/30 frames \(100%\) {2}100\.0 fps {2}done in 0:00\x1b\[K\n$/,
    );
  });

  it('works without a total (no bar, no ETA)', () => {
    const s = sink(false);
    const p = new Progress({ label: 'x', stream: s, now: () => 1000 });
    p.tick(3);
    expect(p.line()).toContain('3 frames');
    expect(p.line()).toContain('ETA --:--');
  });

  it('formats durations', () => {
    expect(formatDuration(0)).toBe('0:00');
    expect(formatDuration(65.4)).toBe('1:05');
    expect(formatDuration(3725)).toBe('1:02:05');
    expect(formatDuration(Number.POSITIVE_INFINITY)).toBe('--:--');
  });
});
