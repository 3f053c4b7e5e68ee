/**
 * Provenance of an offline render (`avatar render`): the frame stamper for the render's frames (one render id, one
 * time slot: the render's start) and, once the video is complete, the signed sidecar manifest naming the engine, its
 * pack hash, the portrait (content hash, store id and consent record when it came from the portrait store), the time
 * and the watermark payload.
 */
import { createHash, randomUUID } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config.js';
import { loadOrCreateSigningKey, keyFilePath, type SigningKey } from './keys.js';
import { manifestPathFor, sha256File, signManifest, writeManifest, type ClaimInput } from './manifest.js';
import { FrameStamper } from './stamper.js';

export const WATERMARK_ALGORITHM = 'live-avatar-wm/1 (ISS spread spectrum, 64x64 luma lattice, K=7 r=1/2 + CRC-16)';

export interface RenderProvenanceOptions {
  config: Config;
  portraitFile: string;
  engineName: string;
  /** The model pack folder the engine loaded, or null for engines without one. */
  modelPack: string | null;
  /** The claim generator, e.g. live-avatar-server/0.1.0. */
  generator: string;
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

async function packInfo(dir: string): Promise<{ name: string; version: string; sha256: string }> {
  // The manifest lists every file of the pack with its sha256: its own hash pins the whole pack.
  const bytes = await fs.readFile(path.join(dir, 'manifest.json'));
  const m = JSON.parse(bytes.toString('utf8')) as { name?: unknown; version?: unknown };
  return { name: str(m.name), version: str(m.version), sha256: createHash('sha256').update(bytes).digest('hex') };
}

/** The portrait store's record next to a stored portrait file (<dataDir>/portraits/<id>.png or <id>.orig.<ext>). */
async function storeRecord(file: string): Promise<{ id: string; consent: ClaimInput['portrait']['consent'] } | null> {
  const m = /^([A-Za-z0-9_-]+)(\.orig)?\.[a-z]+$/.exec(path.basename(file));
  if (!m) return null;
  let rec: { id?: unknown; consent?: { given?: unknown; at?: unknown; version?: unknown; text?: unknown } };
  try {
    rec = JSON.parse(await fs.readFile(path.join(path.dirname(file), `${m[1]}.json`), 'utf8')) as typeof rec;
  } catch {
    // No record beside the file: a portrait from anywhere else.
    return null;
  }
  if (rec.id !== m[1] || !rec.consent) return null;
  const c = rec.consent;
  return {
    id: m[1]!,
    consent: {
      given: c.given === true,
      at: str(c.at),
      version: typeof c.version === 'string' ? c.version : null,
      textSha256: typeof c.text === 'string' ? createHash('sha256').update(c.text).digest('hex') : null,
    },
  };
}

export class RenderProvenance {
  readonly renderId: string;
  readonly startedAt: number;
  readonly stamper: FrameStamper;
  readonly #key: SigningKey;
  readonly #opts: RenderProvenanceOptions;

  private constructor(opts: RenderProvenanceOptions, key: SigningKey) {
    this.#opts = opts;
    this.#key = key;
    this.renderId = `render-${randomUUID()}`;
    this.startedAt = Date.now();
    const t = this.startedAt;
    this.stamper = new FrameStamper({ config: opts.config.provenance, id: this.renderId, now: () => t });
  }

  /** Loads (or creates, mode 0600) the server's signing key. @throws AppError('SIGNING_KEY_INVALID'). */
  static async create(opts: RenderProvenanceOptions): Promise<RenderProvenance> {
    const key = await loadOrCreateSigningKey(keyFilePath(opts.config.provenance.keyFile, opts.config.dataDir));
    return new RenderProvenance(opts, key);
  }

  /** Signs the finished video: writes `<video>.provenance.json` and returns its path. */
  async sign(video: string): Promise<string> {
    const o = this.#opts;
    const [asset, portraitHash, stored, pack] = await Promise.all([
      sha256File(video),
      sha256File(o.portraitFile),
      storeRecord(o.portraitFile),
      o.modelPack ? packInfo(o.modelPack) : Promise.resolve(null),
    ]);
    const created = new Date(this.startedAt).toISOString();
    const manifest = signManifest(
      {
        generator: o.generator,
        created,
        asset: { file: path.basename(video), sha256: asset.sha256, bytes: asset.bytes, mime: 'video/mp4' },
        engine: { name: o.engineName, pack },
        portrait: {
          id: stored?.id ?? null,
          sha256: portraitHash.sha256,
          file: path.basename(o.portraitFile),
          consent: stored?.consent ?? null,
        },
        watermark: this.stamper.watermarking
          ? { algorithm: WATERMARK_ALGORITHM, payload: this.stamper.payloadHex(), renderId: this.renderId }
          : null,
      },
      this.#key,
    );
    const file = manifestPathFor(video);
    await writeManifest(file, manifest);
    return file;
  }
}
