/**
 * Room churn on a real server (port 0, REST, real avatar worker threads): rooms created and deleted round after
 * round reuse the pool's workers instead of starting (and ending) a thread per room, and closing the server leaves
 * no worker thread behind. The memory this saves is measured by benchmarks/churn.ts, not here.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { portraitFile } from '../helpers/media.js';
import { apiFetch, createTestRoom, startTestServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

let ts: TestServer | null = null;

afterEach(async () => {
  await ts?.stop();
  ts = null;
});

describe('room churn', () => {
  it('rooms created and deleted reuse the avatar workers; closing the server ends them all', async () => {
    ts = await startTestServer({ avatar: { engine: 'portrait', spareWorkers: 1 } });
    const url = ts.url;
    const rounds = 3;
    const perRound = 2;
    for (let r = 0; r < rounds; r++) {
      const rooms = [];
      for (let i = 0; i < perRound; i++)
        rooms.push(await createTestRoom(url, portraitFile('real_woman_dark_hair.png')));
      for (const room of rooms) {
        const res = await apiFetch(`${url}/api/rooms/${room.roomId}`, { method: 'DELETE' });
        expect(res.status).toBe(204);
      }
      // The deleted rooms' workers are idle again (reset) before the next round takes them.
      await waitFor(() => ts!.server.workers.stats.idle >= perRound, 20_000, 'the workers back in the pool');
    }
    const { started, reused } = ts.server.workers.stats;
    // Threads: at most one round's rooms plus the spare, whatever the number of rounds.
    expect(started).toBeLessThanOrEqual(perRound + 1);
    expect(reused).toBeGreaterThanOrEqual((rounds - 1) * perRound);
    const workers = ts.server.workers;
    expect(workers.stats.live).toBeGreaterThan(0);
    await ts.stop();
    ts = null;
    // Every thread the pool started has exited once the server is closed.
    expect(workers.stats).toMatchObject({ idle: 0, starting: 0, live: 0 });
  });
});
