/**
 * The watermark payload and its error correction. Pure functions, no I/O.
 *
 * Layout (48 payload bits, 64 protected bits, 140 coded bits):
 *
 *   payload  = id (32 bits: the first 4 bytes of sha256 of the room or render id)
 *            | slot (16 bits: whole minutes since the Unix epoch, modulo 2^16, i.e. it wraps every ~45.5 days)
 *   message  = payload (48) | CRC-16/CCITT-FALSE of the 6 payload bytes (16)           = 64 bits
 *   codeword = convolutional code, rate 1/2, constraint length 7 (generators 171/133 octal, the NASA / 802.11 code),
 *              6 zero tail bits to terminate the trellis                            = (64 + 6) * 2 = 140 bits
 *
 * Decoding is soft-decision Viterbi over the 140 correlation values, then the CRC decides: a window whose decoded CRC
 * does not match is "not present" (a random window passes by chance with probability 2^-16; the detector adds a
 * correlation threshold on top, see watermark.ts).
 */
import { createHash } from 'node:crypto';

export const PAYLOAD_BITS = 48;
export const CRC_BITS = 16;
export const MESSAGE_BITS = PAYLOAD_BITS + CRC_BITS;
const K = 7;
const TAIL = K - 1;
const G0 = 0o171;
const G1 = 0o133;
export const CODED_BITS = (MESSAGE_BITS + TAIL) * 2;

/** The decoded payload. */
export interface WatermarkPayload {
  /** 32-bit id hash. */
  id: number;
  /** 16-bit time slot (minutes since the epoch mod 2^16). */
  slot: number;
}

/** The 32-bit id hash of a room or render id. */
export function idHash(id: string): number {
  return createHash('sha256').update(id, 'utf8').digest().readUInt32BE(0);
}

/** The 16-bit time slot of a time (ms since the epoch). */
export function timeSlot(ms: number): number {
  return Math.floor(ms / 60_000) % 65_536;
}

/** The payload as 12 hex digits: 8 for the id, 4 for the slot. */
export function payloadHex(p: WatermarkPayload): string {
  return (p.id >>> 0).toString(16).padStart(8, '0') + (p.slot & 0xffff).toString(16).padStart(4, '0');
}

/** Parses 12 hex digits back into a payload. */
export function parsePayloadHex(hex: string): WatermarkPayload {
  if (!/^[0-9a-f]{12}$/i.test(hex)) throw new TypeError('a payload is 12 hex digits');
  return { id: Number.parseInt(hex.slice(0, 8), 16) >>> 0, slot: Number.parseInt(hex.slice(8), 16) };
}

/** CRC-16/CCITT-FALSE (poly 0x1021, init 0xffff). */
export function crc16(bytes: Uint8Array): number {
  let crc = 0xffff;
  for (const b of bytes) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

function payloadBytes(p: WatermarkPayload): Uint8Array {
  const b = new Uint8Array(6);
  const v = new DataView(b.buffer);
  v.setUint32(0, p.id >>> 0);
  v.setUint16(4, p.slot & 0xffff);
  return b;
}

/** The 64 message bits (payload then CRC), most significant first. */
export function messageBits(p: WatermarkPayload): Uint8Array {
  const bytes = new Uint8Array(8);
  bytes.set(payloadBytes(p));
  const crc = crc16(bytes.subarray(0, 6));
  bytes[6] = crc >> 8;
  bytes[7] = crc & 0xff;
  const bits = new Uint8Array(MESSAGE_BITS);
  for (let i = 0; i < MESSAGE_BITS; i++) bits[i] = (bytes[i >> 3]! >> (7 - (i & 7))) & 1;
  return bits;
}

function parity(x: number): number {
  x ^= x >> 4;
  x ^= x >> 2;
  x ^= x >> 1;
  return x & 1;
}

/** Convolutional encoding (rate 1/2, K = 7) of the message bits plus the zero tail: CODED_BITS bits (0/1). */
export function convEncode(bits: Uint8Array): Uint8Array {
  const out = new Uint8Array((bits.length + TAIL) * 2);
  let reg = 0;
  for (let i = 0; i < bits.length + TAIL; i++) {
    const b = i < bits.length ? bits[i]! : 0;
    reg = ((reg << 1) | b) & 0x7f;
    out[2 * i] = parity(reg & G0);
    out[2 * i + 1] = parity(reg & G1);
  }
  return out;
}

/** The coded bits of a payload. */
export function encodePayload(p: WatermarkPayload): Uint8Array {
  return convEncode(messageBits(p));
}

const STATES = 1 << TAIL;
/** Per state and input bit: the two output bits as +-1 (bit 1 -> +1). */
const OUT0 = new Int8Array(STATES * 2);
const OUT1 = new Int8Array(STATES * 2);
for (let s = 0; s < STATES; s++) {
  for (let b = 0; b < 2; b++) {
    const reg = ((s << 1) | b) & 0x7f;
    OUT0[s * 2 + b] = parity(reg & G0) ? 1 : -1;
    OUT1[s * 2 + b] = parity(reg & G1) ? 1 : -1;
  }
}

/**
 * Soft-decision Viterbi decoding of a terminated codeword.
 * @param soft CODED_BITS values, positive for a 1 (any scale).
 * @returns the MESSAGE_BITS decoded bits.
 */
export function viterbiDecode(soft: Float64Array, messageLength = MESSAGE_BITS): Uint8Array {
  const steps = messageLength + TAIL;
  if (soft.length < steps * 2) throw new TypeError(`viterbiDecode needs ${steps * 2} soft values`);
  let metric = new Float64Array(STATES).fill(-Infinity);
  let next = new Float64Array(STATES);
  metric[0] = 0;
  // Survivor decisions: for each step and new state, which previous state it came from.
  const from = new Uint8Array(steps * STATES);
  for (let t = 0; t < steps; t++) {
    const a = soft[2 * t]!;
    const c = soft[2 * t + 1]!;
    next.fill(-Infinity);
    const maxBit = t < messageLength ? 1 : 0;
    for (let s = 0; s < STATES; s++) {
      const m = metric[s]!;
      if (m === -Infinity) continue;
      for (let b = 0; b <= maxBit; b++) {
        const ns = ((s << 1) | b) & (STATES - 1);
        const v = m + OUT0[s * 2 + b]! * a + OUT1[s * 2 + b]! * c;
        if (v > next[ns]!) {
          next[ns] = v;
          from[t * STATES + ns] = s;
        }
      }
    }
    [metric, next] = [next, metric];
  }
  // Terminated: the path ends in state 0.
  const bits = new Uint8Array(steps);
  let s = 0;
  for (let t = steps - 1; t >= 0; t--) {
    bits[t] = s & 1;
    s = from[t * STATES + s]!;
  }
  return bits.subarray(0, messageLength);
}

/** The payload in 64 decoded message bits, or null when the CRC does not match. */
export function checkMessage(bits: Uint8Array): WatermarkPayload | null {
  const bytes = new Uint8Array(8);
  for (let i = 0; i < MESSAGE_BITS; i++) bytes[i >> 3] = bytes[i >> 3]! | (bits[i]! << (7 - (i & 7)));
  const crc = (bytes[6]! << 8) | bytes[7]!;
  if (crc16(bytes.subarray(0, 6)) !== crc) return null;
  const v = new DataView(bytes.buffer);
  return { id: v.getUint32(0), slot: v.getUint16(4) };
}
