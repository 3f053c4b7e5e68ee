/**
 * socket.io client helpers for tests: a typed client connected to a test server, and `request()`, which emits one
 * protocol event with its ack and resolves with the Result.
 */
import { io as ioc, type Socket } from 'socket.io-client';
import type { ClientToServerEvents, Result, ServerToClientEvents } from '../../server/types/protocol.js';

export type ClientSocket = Socket<ServerToClientEvents, ClientToServerEvents>;

/** Connects a websocket-only socket.io client to `url` and waits until it is connected. */
export async function connectClient(url: string, timeoutMs = 5000): Promise<ClientSocket> {
  const socket: ClientSocket = ioc(url, {
    transports: ['websocket'],
    reconnection: false,
    forceNew: true,
    timeout: timeoutMs,
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('connectClient: timeout')), timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.once('connect_error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
  return socket;
}

/**
 * Emits `event` with `payload` and an ack; resolves with the server's Result. Rejects after `timeoutMs` without an
 * answer. The payload is deliberately `unknown`: tests send malformed payloads through the same path.
 */
export function request<T = unknown>(
  socket: ClientSocket,
  event: keyof ClientToServerEvents,
  payload: unknown,
  timeoutMs = 10_000,
): Promise<Result<T>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`request ${event}: no ack within ${timeoutMs} ms`)), timeoutMs);
    (socket.emit as (ev: string, ...args: unknown[]) => void)(event, payload, (res: Result<T>) => {
      clearTimeout(timer);
      resolve(res);
    });
  });
}

/** Like request() but throws when the result is an error; returns its data. */
export async function call<T = unknown>(
  socket: ClientSocket,
  event: keyof ClientToServerEvents,
  payload: unknown,
  timeoutMs?: number,
): Promise<T> {
  const res = await request<T>(socket, event, payload, timeoutMs);
  if (!res.ok) throw new Error(`${event} failed: ${res.error.code}: ${res.error.message}`);
  return res.data;
}
