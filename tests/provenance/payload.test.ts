/** The payload layout and its error correction: CRC, convolutional code, soft Viterbi decoding. */
import { describe, expect, it } from 'vitest';
import {
  CODED_BITS,
  checkMessage,
  crc16,
  encodePayload,
  idHash,
  messageBits,
  parsePayloadHex,
  payloadHex,
  timeSlot,
  viterbiDecode,
} from '../../server/provenance/payload.js';

function softOf(coded: Uint8Array, amplitude = 1): Float64Array {
  return Float64Array.from(coded, (b) => (b ? amplitude : -amplitude));
}

describe('watermark payload', () => {
  it('lays out 32-bit id + 16-bit minute slot as 12 hex digits', () => {
    expect(idHash('room-a')).not.toBe(idHash('room-b'));
    expect(idHash('room-a')).toBe(idHash('room-a'));
    expect(timeSlot(Date.UTC(1970, 0, 1, 1, 0, 30))).toBe(60);
    expect(timeSlot(65_536 * 60_000)).toBe(0);
    const p = { id: 0xdeadbeef, slot: 0x0102 };
    expect(payloadHex(p)).toBe('deadbeef0102');
    expect(parsePayloadHex('deadbeef0102')).toEqual(p);
    expect(() => parsePayloadHex('xyz')).toThrow(TypeError);
  });

  it('computes CRC-16/CCITT-FALSE (check value of "123456789" is 0x29b1)', () => {
    expect(crc16(new TextEncoder().encode('123456789'))).toBe(0x29b1);
  });

  it('decodes a clean codeword and corrects scattered errors; a broken CRC is refused', () => {
    const p = { id: idHash('render-xyz'), slot: 4321 };
    const coded = encodePayload(p);
    expect(coded.length).toBe(CODED_BITS);
    expect(checkMessage(viterbiDecode(softOf(coded)))).toEqual(p);
    // 10 flipped bits, spread out (7% raw BER): the K=7 code corrects them.
    const soft = softOf(coded);
    for (let i = 3; i < CODED_BITS; i += 14) soft[i] = -soft[i]!;
    expect(checkMessage(viterbiDecode(soft))).toEqual(p);
    // Weak but right soft values outweigh one strong wrong one.
    const mixed = softOf(coded, 0.5);
    mixed[20] = -mixed[20]! * 3;
    expect(checkMessage(viterbiDecode(mixed))).toEqual(p);
    // A message whose CRC does not match.
    const bits = messageBits(p);
    bits[5] = bits[5]! ^ 1;
    expect(checkMessage(bits)).toBeNull();
  });

  it('refuses random soft values (CRC) in all but a tiny share of tries', () => {
    let seed = 12345;
    const rnd = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff) * 2 - 1;
    let passed = 0;
    for (let t = 0; t < 300; t++) {
      const soft = new Float64Array(CODED_BITS);
      for (let i = 0; i < CODED_BITS; i++) soft[i] = rnd();
      if (checkMessage(viterbiDecode(soft))) passed++;
    }
    expect(passed).toBe(0);
  });
});
