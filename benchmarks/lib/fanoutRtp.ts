/**
 * The RTP receiver process of the fan-out benchmark's `*_rtp` modes (forked through benchmarks/lib/child.ts; requests
 * RtpRequest in fanoutProtocol.ts): one UDP socket on 127.0.0.1 per RTP viewer, each the destination of one mediasoup PlainTransport
 * consumer (SRTP, created by the benchmark server: see benchmarks/lib/fanoutServer.ts). Nothing is decrypted or
 * decoded: SRTP encrypts the payload only, so the RTP header is read as is. Per socket it counts
 * - video RTP packets (the watched payload type) and their bytes (whole UDP payload: header, encrypted payload,
 *   SRTP auth tag);
 * - frames: each forward change of the RTP timestamp (all packets of a video frame carry the frame's timestamp);
 * - lost packets: forward gaps in the sequence numbers.
 * RTCP (multiplexed on the same port) and other payload types (RTX) are counted apart, for the whole process.
 */
import dgram from 'node:dgram';
import { ParentChannel, runChild } from './child.js';
import type { RtpOpened, RtpRequest, RtpStats, ViewerCounters } from './fanoutProtocol.js';

interface RtpViewer {
  socket: dgram.Socket;
  port: number;
  packets: number;
  bytes: number;
  frames: number;
  lost: number;
  lastTs: number | null;
  lastSeq: number | null;
}

const viewers: RtpViewer[] = [];
let watchPt: number | null = null;
let rtcpPackets = 0;
let otherPackets = 0;

function onPacket(v: RtpViewer, b: Buffer): void {
  if (b.length < 12 || b[0]! >> 6 !== 2) {
    otherPackets++;
    return;
  }
  const b1 = b[1]!;
  // RFC 5761 demultiplexing: RTCP packet types 192-223 occupy the marker + payload type byte.
  if (b1 >= 192 && b1 <= 223) {
    rtcpPackets++;
    return;
  }
  if ((b1 & 0x7f) !== watchPt) {
    otherPackets++;
    return;
  }
  v.packets++;
  v.bytes += b.length;
  const seq = b.readUInt16BE(2);
  const ts = b.readUInt32BE(4);
  if (v.lastSeq === null) v.lastSeq = seq;
  else {
    const d = (seq - v.lastSeq) & 0xffff;
    if (d > 0 && d < 0x8000) {
      v.lost += d - 1;
      v.lastSeq = seq;
    }
  }
  if (v.lastTs === null) {
    v.lastTs = ts;
    v.frames++;
  } else {
    const d = (ts - v.lastTs) >>> 0;
    if (d > 0 && d < 0x80000000) {
      v.frames++;
      v.lastTs = ts;
    }
  }
}

async function open(count: number): Promise<number[]> {
  const ports: number[] = [];
  for (let i = 0; i < count; i++) {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, '127.0.0.1', () => {
        socket.off('error', reject);
        resolve();
      });
    });
    try {
      socket.setRecvBufferSize(1 << 20);
    } catch {
      // Capped by net.core.rmem_max: the default buffer then.
    }
    const v: RtpViewer = {
      socket,
      port: socket.address().port,
      packets: 0,
      bytes: 0,
      frames: 0,
      lost: 0,
      lastTs: null,
      lastSeq: null,
    };
    socket.on('message', (b) => onPacket(v, b));
    socket.on('error', () => undefined);
    viewers.push(v);
    ports.push(v.port);
  }
  return ports;
}

function closeAll(): void {
  for (const v of viewers.splice(0)) v.socket.close();
}

async function handle(m: RtpRequest): Promise<RtpOpened | RtpStats | null> {
  switch (m.cmd) {
    case 'open':
      return { ports: await open(m.count) };
    case 'watch':
      watchPt = m.pt;
      return null;
    case 'stats':
      return {
        at: Date.now(),
        viewers: viewers.map((v): ViewerCounters => ({
          framesReceived: v.frames,
          framesDecoded: 0,
          framesDropped: 0,
          keyFramesDecoded: 0,
          freezeCount: 0,
          totalDecodeTime: 0,
          bytesReceived: v.bytes,
          packetsReceived: v.packets,
          packetsLost: v.lost,
          frameWidth: 0,
          connected: v.packets > 0,
        })),
        rtcpPackets,
        otherPackets,
      };
    case 'close':
      closeAll();
      return null;
  }
}

runChild('fanout RTP receiver', () => {
  const parent = new ParentChannel<RtpRequest, null>(handle);
  parent.onStop('fanout RTP receiver', closeAll);
  parent.ready(null);
  return Promise.resolve();
});
