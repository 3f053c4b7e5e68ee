/**
 * libwebrtc's own per-frame numbers for the glass-to-glass benchmark: the server's @roamhq/wrtc peers (the ingest's
 * jitter buffer and decode, each viewer peer's encode) are recorded as the server creates them, and two getStats
 * snapshots of any peer (server or browser) become mean per-frame stage times. And the CPU the benchmark itself and
 * everything else on the shared machine used (/proc), to say how quiet a measuring window was.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { wrtc } from '../../server/media/rtc.js';
import type { RtpCounters } from './browserRtp.js';

/**
 * Records every wrtc peer connection the in-process server creates from now on into `peers`. Returns the function
 * that restores the original constructor.
 */
export function tapServerPeers(peers: RTCPeerConnection[]): () => void {
  const mod = wrtc as unknown as { RTCPeerConnection: typeof RTCPeerConnection };
  const Native = mod.RTCPeerConnection;
  mod.RTCPeerConnection = class extends Native {
    constructor(config?: RTCConfiguration) {
      super(config);
      peers.push(this);
    }
  };
  return () => {
    mod.RTCPeerConnection = Native;
  };
}

/**
 * Mean per-frame libwebrtc times (ms) of the stream of `type` and `kind` between two snapshots; null without frames.
 * For audio only the jitter buffer (NetEq) delay per emitted sample.
 */
export function rtpStages(
  before: readonly RtpCounters[],
  after: readonly RtpCounters[],
  type: RtpCounters['type'],
  kind: 'video' | 'audio' = 'video',
): Record<string, number> | null {
  const pick = (l: readonly RtpCounters[]): RtpCounters | undefined =>
    l.find((r) => r.type === type && r.kind === kind);
  const a = pick(before);
  const b = pick(after);
  if (!a || !b) return null;
  if (kind === 'audio') {
    const emitted = b.jitterBufferEmittedCount - a.jitterBufferEmittedCount;
    return emitted > 0
      ? { jitter_buffer_mean_ms: +(((b.jitterBufferDelay - a.jitterBufferDelay) / emitted) * 1000).toFixed(2) }
      : null;
  }
  const frames = b.frames - a.frames;
  if (frames <= 0) return null;
  const ms = (k: keyof RtpCounters, n = frames): number =>
    +((((b[k] as number) - (a[k] as number)) / n) * 1000).toFixed(2);
  return type === 'outbound-rtp'
    ? { frames, encode_mean_ms: ms('totalEncodeTime') }
    : {
        frames,
        jitter_buffer_mean_ms: ms(
          'jitterBufferDelay',
          b.jitterBufferEmittedCount - a.jitterBufferEmittedCount || frames,
        ),
        decode_mean_ms: ms('totalDecodeTime'),
        receive_to_decoded_mean_ms: ms('totalProcessingDelay'),
      };
}

/** CPU seconds used so far: by the whole machine (all cores), and by this process with all its descendants. */
export function cpuSeconds(): { machine: number; mine: number } {
  const tick = 100; // USER_HZ on Linux
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
  const machine = (cpu[0]! + cpu[1]! + cpu[2]! + cpu[5]! + cpu[6]! + (cpu[7] ?? 0)) / tick;
  const parent = new Map<number, number>();
  const used = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue; // the process ended while we listed
    }
    // Fields after the command name (which may hold spaces): state ppid ... utime(14) stime(15).
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    parent.set(Number(name), Number(f[1]));
    used.set(Number(name), (Number(f[11]) + Number(f[12])) / tick);
  }
  const mineOf = (pid: number): boolean => {
    for (let p = pid, hops = 0; p > 1 && hops < 64; p = parent.get(p) ?? 0, hops++) if (p === process.pid) return true;
    return false;
  };
  let mine = 0;
  for (const [pid, s] of used) if (mineOf(pid)) mine += s;
  return { machine, mine };
}
