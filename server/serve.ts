/**
 * The server process's life: config from the environment, start the server, log its URL, and shut down cleanly on
 * SIGINT / SIGTERM (rooms, peers and sockets closed before exit: letting Node exit with WebRTC peers alive crashes).
 * `npm start` (server/main.ts) and `avatar serve` (server/cli/serve.ts) both run this, so they cannot drift apart.
 */
import path from 'node:path';
import { createServer } from './app.js';
import { loadConfig } from './config.js';
import { toPublicError } from './errors.js';
import { createLogger } from './logger.js';
import { supportedNodeMajors, unsupportedNode } from './nodeVersion.js';

const log = createLogger('main');

/**
 * Starts the server from `env` and resolves with the process exit code once a signal has stopped it (0 after a clean
 * shutdown, 1 when start-up or shutdown failed). The caller exits with that code: nothing else may keep running.
 */
export async function runServer(env: NodeJS.ProcessEnv): Promise<number> {
  const unsupported = unsupportedNode();
  if (unsupported) {
    log.error('unsupported Node version', { node: process.versions.node, supported: supportedNodeMajors });
    return 1;
  }
  let server: Awaited<ReturnType<typeof createServer>>;
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(env);
    server = await createServer(config);
  } catch (err) {
    const pub = toPublicError(err);
    log.error('start-up failed', { code: pub.code, message: err instanceof Error ? err.message : String(err) });
    return 1;
  }
  log.info('server ready', { url: server.url, studio: `${server.url}/`, dataDir: config.dataDir });
  if (server.operatorKey) {
    // As Jupyter prints its tokened URL: this link signs the browser in to the studio (the key then becomes a cookie
    // and leaves the address bar). Only to a terminal, once: output that is piped or collected (systemd, docker, CI)
    // ends up in logs, which must not hold the key; it is in <dataDir>/operator-key either way.
    const keyFile = path.join(config.dataDir, 'operator-key');
    if (process.stdout.isTTY) {
      process.stdout.write(
        `\n  Studio (signs this browser in): ${server.url}/?key=${encodeURIComponent(server.operatorKey)}\n` +
          `  API key for scripts: in ${keyFile} (Authorization: Bearer <key>)\n\n`,
      );
    } else {
      process.stdout.write(
        `\n  Studio: ${server.url}/  (sign in with ${server.url}/?key=<key>, the key is in ${keyFile})\n\n`,
      );
    }
  } else {
    log.info('API keys configured', { keys: config.auth.apiKeys.map((k) => k.name) });
  }
  if (config.host !== '127.0.0.1' && config.host !== '::1' && config.host !== 'localhost') {
    log.warn('listening beyond loopback: anyone who can reach this address can join rooms with a link', {
      host: config.host,
    });
  }

  const started = server;
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) {
        log.warn('second signal: exiting now', { signal });
        process.exit(1);
      }
      stopping = true;
      log.info('shutting down', { signal });
      // A hung close must not keep the process alive forever.
      const deadline = setTimeout(() => {
        log.error('shutdown timed out');
        process.exit(1);
      }, 10_000);
      deadline.unref();
      started.close().then(
        () => {
          clearTimeout(deadline);
          resolve(0);
        },
        (err: unknown) => {
          log.error('shutdown failed', { err });
          resolve(1);
        },
      );
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
  });
}
