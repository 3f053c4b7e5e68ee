/**
 * The server the browser benchmarks measure: loopback only, port 0, direct fan-out, ICE limited to 127.0.0.1, the
 * client bundles built, and the given engine ('passthrough' for the media plane alone, 'default' glass to glass).
 */
import path from 'node:path';
import { createServer, type AvatarServer } from '../../server/app.js';
import { loadConfig, type Config } from '../../server/config.js';
import { buildClient } from '../../tests/helpers/chromium.js';

export async function startBenchServer(tmp: string, engine: Config['avatar']['engine']): Promise<AvatarServer> {
  const config = loadConfig(
    {},
    {
      host: '127.0.0.1',
      port: 0,
      logLevel: 'warn',
      dataDir: path.join(tmp, 'data'),
      avatar: { engine },
      fanout: { mode: 'direct' },
      media: { iceAddressAllowList: ['127.0.0.1'] },
    },
  );
  await buildClient();
  return createServer(config);
}
