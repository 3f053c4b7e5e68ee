/**
 * The server every benchmark measures, started one way: loopback only (127.0.0.1, port 0), warn-level logs, direct
 * fan-out unless the overrides say otherwise, ICE candidates limited to 127.0.0.1, its data in a temporary folder
 * that close() removes. In this process (transport, glass-to-glass, whip-whep, watermark) or in a child process
 * (benchmarks/lib/serverChild.ts, for the fan-out and reliability benchmarks). And the REST steps every benchmark
 * takes before it streams: upload a portrait (consent given), open a room for it.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createServer, type AvatarServer } from '../../server/app.js';
import { loadConfig, type Config, type DeepPartial } from '../../server/config.js';
import type { FrameTimings } from '../../server/rooms/room.js';
import { buildClient } from '../../tests/helpers/chromium.js';

export interface LoopbackOptions {
  /**
   * Merged over the loopback defaults key by key at the top level (a `fanout` or `media` here replaces the default
   * one whole), then over the product defaults by loadConfig.
   */
  overrides?: DeepPartial<Config>;
  /** Build the client bundles first (benchmarks that open the studio and viewer pages in Chromium). */
  buildClient?: boolean;
}

/** The benchmark config: loopback defaults, then `overrides` (see LoopbackOptions). */
export function loopbackConfig(dataDir: string, overrides: DeepPartial<Config> = {}): Config {
  return loadConfig(
    {},
    {
      host: '127.0.0.1',
      port: 0,
      logLevel: 'warn',
      dataDir,
      fanout: { mode: 'direct' },
      media: { iceAddressAllowList: ['127.0.0.1'] },
      ...overrides,
    },
  );
}

/** A started loopback server; close() closes it and removes its data folder. */
export interface LoopbackServer {
  readonly server: AvatarServer;
  readonly url: string;
  /** The management API's bearer token (the local operator's key: no key is configured). */
  readonly apiKey: string;
  close(): Promise<void>;
}

export async function startLoopbackServer(o: LoopbackOptions = {}): Promise<LoopbackServer> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'avatar-bench-'));
  try {
    if (o.buildClient) await buildClient();
    const server = await createServer(loopbackConfig(dataDir, o.overrides));
    let closing: Promise<void> | null = null;
    return {
      server,
      url: server.url,
      apiKey: server.operatorKey ?? '',
      close: () => (closing ??= server.close().finally(() => rm(dataDir, { recursive: true, force: true }))),
    };
  } catch (err) {
    await rm(dataDir, { recursive: true, force: true });
    throw err;
  }
}

/** What POST /api/rooms answers, with the portrait the room was opened for. */
export interface RoomLinks {
  roomId: string;
  portraitId: string;
  performerToken: string;
  viewerToken: string;
  performerUrl: string;
  viewerUrl: string;
}

const bearer = (apiKey: string): Record<string, string> => ({ authorization: `Bearer ${apiKey}` });

/** Uploads a portrait file (consent given); returns its id. */
export async function uploadPortrait(url: string, apiKey: string, file: string): Promise<string> {
  const form = new FormData();
  form.append('consent', 'true');
  form.append('file', new Blob([new Uint8Array(await readFile(file))]), path.basename(file));
  const up = await fetch(`${url}/api/portraits`, { method: 'POST', body: form, headers: bearer(apiKey) });
  if (up.status !== 201) throw new Error(`portrait upload failed: ${up.status} ${await up.text()}`);
  return ((await up.json()) as { id: string }).id;
}

/** Opens a room for an uploaded portrait. */
export async function createRoom(url: string, apiKey: string, portraitId: string): Promise<RoomLinks> {
  const rr = await fetch(`${url}/api/rooms`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...bearer(apiKey) },
    body: JSON.stringify({ portraitId }),
  });
  if (rr.status !== 201) throw new Error(`room creation failed: ${rr.status} ${await rr.text()}`);
  return { portraitId, ...((await rr.json()) as Omit<RoomLinks, 'portraitId'>) };
}

/** Uploads `portraitFile` and opens a room for it. */
export async function openRoom(url: string, apiKey: string, portraitFile: string): Promise<RoomLinks> {
  return createRoom(url, apiKey, await uploadPortrait(url, apiKey, portraitFile));
}

/**
 * A room of an in-process server, recorded while `recording` is true: its per-frame stage times (the Room's 'frame'
 * events) and the driving frames its mailbox dropped.
 */
export class RoomRecorder {
  readonly timings: FrameTimings[] = [];
  dropped = 0;
  recording = false;

  constructor(server: AvatarServer, roomId: string) {
    const room = server.rooms.get(roomId);
    if (!room) throw new Error('room not in the registry');
    room.on('frame', (t: FrameTimings) => {
      if (this.recording) this.timings.push(t);
    });
    room.on('dropped', (n: number) => {
      if (this.recording) this.dropped += n;
    });
  }

  /** Forgets what was recorded (a new window). */
  reset(): void {
    this.timings.length = 0;
    this.dropped = 0;
  }
}
