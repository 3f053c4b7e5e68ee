/**
 * Starts a real server for a test: port 0 on 127.0.0.1, a fresh temporary data folder, logs silenced, tokens signed
 * with a fixed test secret, the default fan-out ('auto': the SFU where the mediasoup worker is, as vitest.config.ts
 * hands it to every test process; direct elsewhere) and ICE limited to loopback, a
 * cluster node's internal listener on a free port. Tests of the direct path (the
 * socket 'view' offer) ask for `fanout: { mode: 'direct' }` themselves. `stop()` closes the server, checks that the port is free again and removes the data folder.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer, type AvatarServer, type ServerOptions } from '../../server/app.js';
import { loadConfig, type Config, type DeepPartial } from '../../server/config.js';
import { isPortFree } from './net.js';
import { waitFor } from './wait.js';

/** The repository root. */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const TEST_TOKEN_SECRET = 'test-secret-0123456789abcdef';
/** The API key every test server accepts (owner name 'test'); management calls need it. */
export const TEST_API_KEY = 'test-api-key-0123456789abcdef';
/** A second key (owner 'other'), for the tests that nothing leaks across owners. */
export const OTHER_API_KEY = 'other-api-key-0123456789abcdef';

/** The Authorization header of an API key. */
export const apiAuth = (key = TEST_API_KEY): Record<string, string> => ({ authorization: `Bearer ${key}` });

/** What POST /api/rooms answers, with the portrait the room animates. */
export interface TestRoom {
  roomId: string;
  portraitId: string;
  performerUrl: string;
  viewerUrl: string;
  performerToken: string;
  viewerToken: string;
}

/**
 * Uploads `portraitPath` (with consent) and creates a room animating it, through the REST API with `key`.
 * @throws Error naming the status when either call is refused.
 */
export async function createTestRoom(baseUrl: string, portraitPath: string, key = TEST_API_KEY): Promise<TestRoom> {
  const form = new FormData();
  form.append('consent', 'true');
  form.append('file', new Blob([new Uint8Array(await readFile(portraitPath))]), path.basename(portraitPath));
  const auth = { authorization: `Bearer ${key}` };
  const up = await fetch(`${baseUrl}/api/portraits`, { method: 'POST', body: form, headers: auth });
  if (up.status !== 201) throw new Error(`portrait upload failed: ${up.status} ${await up.text()}`);
  const { id: portraitId } = (await up.json()) as { id: string };
  const res = await fetch(`${baseUrl}/api/rooms`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ portraitId }),
  });
  if (res.status !== 201) throw new Error(`room creation failed: ${res.status} ${await res.text()}`);
  return { ...((await res.json()) as Omit<TestRoom, 'portraitId'>), portraitId };
}

/** fetch with the test API key, unless the request names its own Authorization. */
export function apiFetch(url: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  if (!headers.has('authorization')) headers.set('authorization', `Bearer ${TEST_API_KEY}`);
  return fetch(url, { ...init, headers });
}

export interface TestServer {
  server: AvatarServer;
  config: Config;
  url: string;
  port: number;
  dataDir: string;
  /** Closes the server, waits until its port is free, removes the data folder. Idempotent. */
  stop(): Promise<void>;
}

function isPlain(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
function deepMerge<T>(a: T, b: T): T {
  const out: Record<string, unknown> = { ...(a as Record<string, unknown>) };
  for (const [k, v] of Object.entries(b as Record<string, unknown>))
    out[k] = isPlain(v) && isPlain(out[k]) ? deepMerge(out[k], v) : v;
  return out as T;
}

/** Starts a server with the test defaults above, deep-merged with `overrides`. */
export async function startTestServer(
  overrides: DeepPartial<Config> = {},
  opts: ServerOptions = {},
): Promise<TestServer> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'avatar-test-'));
  const defaults: DeepPartial<Config> = {
    host: '127.0.0.1',
    port: 0,
    logLevel: 'silent',
    dataDir,
    tokenSecret: TEST_TOKEN_SECRET,
    auth: {
      apiKeys: [
        { name: 'test', secret: TEST_API_KEY },
        { name: 'other', secret: OTHER_API_KEY },
      ],
    },
    media: { iceAddressAllowList: ['127.0.0.1'] },
    // A cluster node's internal listener on a free port too (used only with cluster.redisUrl).
    cluster: { internalPort: 0 },
  };
  const config = loadConfig({}, deepMerge(defaults, overrides));
  let server: AvatarServer;
  try {
    server = await createServer(config, opts);
  } catch (err) {
    await rm(dataDir, { recursive: true, force: true });
    throw err;
  }
  let stopped: Promise<void> | null = null;
  return {
    server,
    config,
    url: server.url,
    port: server.port,
    dataDir,
    stop() {
      stopped ??= (async () => {
        await server.close();
        await waitFor(() => isPortFree(server.port), 5000, `port ${server.port} free`);
        const internal = server.internalUrl ? Number(new URL(server.internalUrl).port) : 0;
        if (internal) await waitFor(() => isPortFree(internal), 5000, `internal port ${internal} free`);
        await rm(dataDir, { recursive: true, force: true });
      })();
      return stopped;
    },
  };
}
