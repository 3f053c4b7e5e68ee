/**
 * The face models the browser's tracker loads are public (GET /models/face/*, before any sign-in) and a few MB each:
 * a stranger may fetch the three pinned files and nothing else, and only so many times a minute per address.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers/server.js';

describe('GET /models/face/* from a stranger', () => {
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer({ avatar: { engine: 'portrait' }, auth: { modelDownloadsPerMinute: 3 } });
  });
  afterAll(async () => ts?.stop());

  it('serves only the three tracker models, and refuses a download flood with 429 and Retry-After', async () => {
    // Other names, traversal and encoded traversal: 404 without a file read (and without taking from the budget).
    for (const bad of [
      'faceres.onnx',
      'sources.json',
      '..%2F..%2Fpackage.json',
      '%2e%2e%2fconfig.json',
      'iris.onnx.bak',
    ])
      expect((await fetch(`${ts.url}/models/face/${bad}`)).status).toBe(404);
    for (let i = 0; i < 3; i++) {
      const r = await fetch(`${ts.url}/models/face/blazeface.onnx`);
      expect(r.status).toBe(200);
      expect((await r.arrayBuffer()).byteLength).toBeGreaterThan(100_000);
    }
    const flood = await fetch(`${ts.url}/models/face/iris.onnx`);
    expect(flood.status).toBe(429);
    expect(Number(flood.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(((await flood.json()) as { code: string }).code).toBe('TOO_MANY_REQUESTS');
    // The API's own budget is separate: the server still answers.
    expect((await fetch(`${ts.url}/healthz`)).status).toBe(200);
  });
});
