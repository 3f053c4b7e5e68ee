/**
 * A small fuzz run for CI: 1,000 mutated messages to warm up, then 2,000 mutated signaling messages and REST bodies (benchmarks/lib/reliabilityFuzz.ts: the
 * corpus of valid requests made against the server itself, one mutation each) against a real server on port 0 (the
 * diagnostic passthrough engine: the fuzz is about the inputs, not the picture). The server must answer every
 * request it answers with a stable code (no 5xx, no INTERNAL), keep answering /healthz, raise no unhandled rejection
 * or uncaught exception in this process, keep Object.prototype clean, and close cleanly (port free) afterwards.
 * `npm run bench -- fuzz` runs 100,000+ against the default engine.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runFuzz } from '../../benchmarks/lib/reliabilityFuzz.js';
import { prototypePolluted } from '../../benchmarks/lib/reliabilityProtocol.js';
import { portraitFile } from '../helpers/media.js';
import { isPortFree } from '../helpers/net.js';
import { startTestServer, TEST_API_KEY, type TestServer } from '../helpers/server.js';

const faults: string[] = [];
const onRejection = (reason: unknown): void => {
  faults.push(`unhandledRejection: ${reason instanceof Error ? (reason.stack ?? reason.message) : String(reason)}`);
};
const onException = (err: Error): void => {
  faults.push(`uncaughtException: ${err.stack ?? err.message}`);
};

let ts: TestServer;

/** A full garbage collection (vitest's forks do not run with --expose-gc). */
function collect(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

/** Memory the process holds after a full collection, MiB: the JS heap and what JS objects own outside it (buffers). */
function retainedMiB(): { heap: number; rss: number } {
  collect();
  const m = process.memoryUsage();
  return { heap: (m.heapUsed + m.external) / 2 ** 20, rss: m.rss / 2 ** 20 };
}

beforeAll(async () => {
  process.on('unhandledRejection', onRejection);
  process.on('uncaughtException', onException);
  ts = await startTestServer({
    avatar: { engine: 'passthrough', outputSize: 256 },
    // One client address and one key send everything: the limiters and quotas would answer most of it.
    auth: { perKeyPerMinute: 1_000_000, perAddressPerMinute: 1_000_000 },
    signaling: { connectionsPerAddressPerMinute: 1_000_000 },
    whip: { perAddressPerMinute: 1_000_000 },
    quotas: { portraitsPerKey: 10_000_000, bytesPerKey: Number.MAX_SAFE_INTEGER },
    maxRooms: 6,
  });
});

afterAll(async () => {
  await ts.stop();
  process.off('unhandledRejection', onRejection);
  process.off('uncaughtException', onException);
});

describe('fuzzed signaling and REST', () => {
  it('2,000 mutated messages: no crash, no 5xx or INTERNAL, no unhandled rejection, memory bounded', async () => {
    const target = { url: ts.url, apiKey: TEST_API_KEY, portraitFile: portraitFile('real_woman_dark_hair.png') };
    // A first round warms the process up (avatar worker threads, wrtc, allocator arenas: ~370 MB of RSS that stays,
    // whatever comes after); the bound is on what the second, larger round adds.
    const warm = await runFuzz(target, { count: 1000, seed: 3, lanes: 6 });
    expect(warm.internalErrors).toEqual([]);
    // The fuzz opens rooms (its valid POST /api/rooms): close them all, as owners do, before the measured round.
    const auth = { authorization: `Bearer ${TEST_API_KEY}` };
    const { rooms } = (await (await fetch(`${ts.url}/api/rooms`, { headers: auth })).json()) as {
      rooms: { roomId: string }[];
    };
    expect(rooms.length).toBeGreaterThan(0);
    for (const r of rooms)
      expect((await fetch(`${ts.url}/api/rooms/${r.roomId}`, { method: 'DELETE', headers: auth })).status).toBe(204);
    const before = retainedMiB();
    const report = await runFuzz(target, { count: 2000, seed: 7, lanes: 6 });
    expect(report.messages).toBeGreaterThanOrEqual(2000);
    expect(report.internalErrors, JSON.stringify(report.internalErrors, null, 1)).toEqual([]);
    expect(report.healthFailures).toBe(0);
    expect(report.healthChecks).toBeGreaterThanOrEqual(2);
    expect(faults).toEqual([]);
    expect(prototypePolluted()).toBe(false);
    // Every kind of answer the server gives is a known code: requests were refused for what they were.
    const rest = Object.keys(report.outcomes).filter((k) => k.startsWith('rest:'));
    expect(rest.some((k) => k.startsWith('rest:400'))).toBe(true);
    expect(rest.some((k) => k.startsWith('rest:20'))).toBe(true);
    const signal = Object.keys(report.outcomes).filter((k) => k.startsWith('signal:'));
    expect(signal).toContain('signal:INVALID_MESSAGE');
    expect(signal).toContain('signal:ok');
    const healthz = await fetch(`${ts.url}/healthz`);
    expect(healthz.status).toBe(200);
    const after = retainedMiB();
    // Bounded: what the process holds after a full collection (JS heap and the buffers JS objects own) grows by less
    // than 40 MiB over 2,000 messages: a server that kept anything per message (sockets, rooms, bodies) would grow with
    // them. Measured -16 to +6 MiB. The whole-process RSS is only a gross bound on native leaks: allocator arenas
    // grow with how many requests are in flight at once, which depends on the machine's load (+16 MiB idle, +100 MiB
    // once in CI under load).
    expect(after.heap - before.heap).toBeLessThan(40);
    expect(after.rss - before.rss).toBeLessThan(300);
  });

  it('closes cleanly after the fuzz: the port is free', async () => {
    await ts.stop();
    expect(await isPortFree(ts.port)).toBe(true);
  });
});
