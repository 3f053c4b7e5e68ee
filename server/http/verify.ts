/**
 * POST /api/verify: is this image or clip a synthesized avatar? Public (no API key: anyone shown a clip may check it).
 *
 * Body: the file itself (any Content-Type but multipart: image/png, video/webm, application/octet-stream, ...), or
 * multipart/form-data with a `file` field and an optional `manifest` field (a provenance manifest, e.g. the sidecar
 * of a render). Answers 200 with the same report as `avatar verify --json`:
 *   {"watermark": {"present", "payload", "windows", "detected_windows", "slot_time"}, "signature": {...} | null}
 * Errors: 400 BAD_REQUEST (empty body, no file field), 413 PAYLOAD_TOO_LARGE (over `verify.maxBytes`), 413
 * IMAGE_TOO_LARGE (over `verify.maxPixels`, read from the header: nothing is decoded), 415 UNSUPPORTED_MEDIA_TYPE (not
 * an image or a clip in an allowed container), 422 MANIFEST_INVALID, 429 TOO_MANY_REQUESTS (over
 * `verify.perAddressPerMinute` from one address, with Retry-After; or more than `verify.maxConcurrent` running: each
 * decodes on this machine's CPU).
 *
 * Public, so everything it does is bounded before it is done: the rate limit before the body is read, the body cap
 * from Content-Length, the pixel count from the header, images shrunk while decoding, a clip's first `maxFrames` frames
 * only, and ffmpeg limited to the uploaded temp file and the containers of VERIFY_VIDEO_FORMATS.
 */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Config } from '../config.js';
import { AppError, RateLimitError } from '../errors.js';
import type { Logger } from '../logger.js';
import { keyFilePath, loadOrCreateSigningKey, normalizePublicKey } from '../provenance/keys.js';
import { verifyFile } from '../provenance/verify.js';
import type { Handler } from './exchange.js';
import { multipartBoundary, parseMultipart } from './multipart.js';
import { RateLimiter } from './rateLimit.js';
import type { Router } from './router.js';

/**
 * Demuxers ffmpeg may use for an uploaded clip: the containers a recording or a render comes in (MP4/MOV, Matroska/
 * WebM, AVI, MPEG-TS, FLV, IVF, Ogg, GIF). Not playlists (hls, concat) or image sequences, which name other files.
 */
export const VERIFY_VIDEO_FORMATS = ['mov', 'mp4', 'matroska', 'webm', 'avi', 'mpegts', 'flv', 'ivf', 'ogg', 'gif'];

export interface VerifyRouteDeps {
  config: Config;
  log: Logger;
}

/** Adds POST /api/verify. */
export function addVerifyRoutes(router: Router<Handler>, deps: VerifyRouteDeps): void {
  const { maxBytes, maxConcurrent, maxFrames, maxPixels, perAddressPerMinute } = deps.config.verify;
  const perAddress = new RateLimiter(perAddressPerMinute, 'address');
  const configuredKeys = deps.config.provenance.trustedKeys.map(normalizePublicKey);
  let running = 0;
  // The server's signing key is made at start-up when missing (mode 0600), so that renders on this host sign with the
  // same key; manifests are valid only when signed by it or by a key of provenance.trustedKeys.
  const serverKey: Promise<string | undefined> = loadOrCreateSigningKey(
    keyFilePath(deps.config.provenance.keyFile, deps.config.dataDir),
  ).then(
    (k) => k.publicKeyB64,
    (err: unknown) => {
      deps.log.warn('no provenance signing key: only provenance.trustedKeys are trusted', { err: err as Error });
      return undefined;
    },
  );

  router.add(
    'POST',
    '/api/verify',
    async (ex) => {
      // First, before the body is read: a refused request costs a map look-up.
      perAddress.take(ex.remoteIp);
      if (running >= maxConcurrent) throw new RateLimitError('too many verifications running; try again shortly', 1);
      running++;
      let dir: string | null = null;
      try {
        const body = await ex.body();
        let data: Buffer = body;
        let manifestText: string | undefined;
        const boundary = multipartBoundary(ex.headers['content-type']);
        if (boundary) {
          const parts = parseMultipart(body, boundary);
          const files = parts.filter((p) => p.name === 'file');
          if (files.length !== 1) throw new AppError('BAD_REQUEST', 'send one "file" field');
          data = files[0]!.data;
          const m = parts.filter((p) => p.name === 'manifest');
          if (m.length > 1) throw new AppError('BAD_REQUEST', 'send at most one "manifest" field');
          if (m[0]) manifestText = m[0].data.toString('utf8');
        }
        if (data.length === 0) throw new AppError('BAD_REQUEST', 'send an image or a clip as the body');
        dir = await fs.mkdtemp(path.join(os.tmpdir(), 'avatar-verify-'));
        const file = path.join(dir, 'input');
        await fs.writeFile(file, data, { mode: 0o600 });
        const key = await serverKey;
        const report = await verifyFile(file, {
          manifestFile: null,
          ...(manifestText !== undefined ? { manifestText } : {}),
          trustedPublicKeys: key ? [key, ...configuredKeys] : configuredKeys,
          maxFrames,
          maxPixels,
          // The lattice is area-averaged (any scale reads), so 512 px, like a clip's frames, loses nothing.
          imageMaxSide: 512,
          videoFormats: VERIFY_VIDEO_FORMATS,
        });
        deps.log.info('verified', { present: report.watermark.present, windows: report.watermark.windows });
        ex.json(200, report);
      } finally {
        running--;
        if (dir) await fs.rm(dir, { recursive: true, force: true });
      }
    },
    { maxBody: maxBytes },
  );
}
