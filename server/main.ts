/**
 * Entry point for `npm start`: config from the environment, start the server, log its URL, and shut down cleanly on
 * SIGINT / SIGTERM (rooms, peers and sockets closed before exit: letting Node exit with WebRTC peers alive crashes).
 */
import path from 'node:path';
import { createServer } from './app.js';
import { loadConfig } from './config.js';
import { toPublicError } from './errors.js';
import { createLogger } from './logger.js';

const log = createLogger('main');

async function main(): Promise<void> {
  const [major] = process.versions.node.split('.').map(Number);
  if (major !== 20) {
    log.error('unsupported Node version: uWebSockets.js needs Node 20', { node: process.versions.node });
    process.exitCode = 1;
    return;
  }
  const config = loadConfig(process.env);
  const server = await createServer(config);
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
    server.close().then(
      () => {
        clearTimeout(deadline);
        process.exit(0);
      },
      (err: unknown) => {
        log.error('shutdown failed', { err });
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}

main().catch((err: unknown) => {
  const pub = toPublicError(err);
  log.error('start-up failed', { code: pub.code, message: err instanceof Error ? err.message : String(err) });
  process.exit(1);
});
