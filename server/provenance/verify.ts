/**
 * One verification of a file, shared by `avatar verify` and POST /api/verify: the watermark (per 1-second window) and,
 * when there is a manifest (the sidecar `<file>.provenance.json` or one given), its signature and file hash.
 * The report's keys are snake_case: it is the JSON that `avatar verify --json` writes and the API returns.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { AppError } from '../errors.js';
import { detectFile } from './detect.js';
import { checkManifest, manifestPathFor, parseManifest } from './manifest.js';
import { parsePayloadHex } from './payload.js';

export interface VerifyReport {
  watermark: {
    present: boolean;
    /** 12 hex digits: 8 of id hash, 4 of minute slot. */
    payload: string | null;
    windows: number;
    detected_windows: number;
    /** The minute the slot names (the latest such minute not after now: slots wrap every ~45.5 days), ISO; or null. */
    slot_time: string | null;
  };
  signature: {
    /**
     * 'valid': signature good, the file's sha256 matches AND the key is trusted (this server's, or in
     * `provenance.trustedKeys`); 'untrusted': a correct signature by another key (`key_id` names it); 'invalid'.
     */
    status: 'valid' | 'untrusted' | 'invalid';
    /** status === 'valid'. */
    valid: boolean;
    signature_valid: boolean;
    hash_matches: boolean;
    key_id: string;
    /** The manifest is signed by a key the operator trusts (this server's, or one of `provenance.trustedKeys`). */
    trusted_key: boolean;
    /** The watermark payload the manifest claims. */
    manifest_payload: string | null;
    /** The decoded watermark equals the manifest's payload (null when either is missing). */
    payload_matches: boolean | null;
    created: string;
    engine: string;
    portrait_id: string | null;
  } | null;
}

export interface VerifyOptions {
  /** A manifest file; undefined: the sidecar `<file>.provenance.json` when it exists; null: none. */
  manifestFile?: string | null;
  /** The manifest text itself (the API's multipart field), instead of a file. */
  manifestText?: string;
  /**
   * The keys whose manifests are valid (SPKI DER base64): this server's and the configured list. Default none: every
   * correct signature is 'untrusted'.
   */
  trustedPublicKeys?: readonly string[];
  /** Decode at most this many frames of a clip. */
  maxFrames?: number;
  /** Shrink images to this long side while decoding (default: full size; clips are always at most 512 px). */
  imageMaxSide?: number;
  /** Refuse (IMAGE_TOO_LARGE) a picture over this many pixels, from its header, before decoding it. */
  maxPixels?: number;
  /** Demuxers ffmpeg may use for a clip, which is then opened as a local file only (an untrusted upload). */
  videoFormats?: readonly string[];
}

/** The most recent minute (ms since the epoch) whose slot is `slot`, not after `now`. */
export function slotTime(slot: number, now = Date.now()): number {
  const nowMin = Math.floor(now / 60_000);
  const back = ((((nowMin % 65_536) - slot) % 65_536) + 65_536) % 65_536;
  return (nowMin - back) * 60_000;
}

async function readIfExists(file: string): Promise<string | null> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/**
 * Verifies a file.
 * @throws AppError('NOT_FOUND' | 'UNSUPPORTED_MEDIA_TYPE') for a missing or undecodable file, ('IMAGE_TOO_LARGE') over
 * `maxPixels`, ('MANIFEST_INVALID') for a
 * manifest that is not one.
 */
export async function verifyFile(file: string, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const det = await detectFile(file, {
    ...(opts.maxFrames !== undefined ? { maxFrames: opts.maxFrames } : {}),
    ...(opts.maxPixels !== undefined ? { maxPixels: opts.maxPixels } : {}),
    ...(opts.imageMaxSide !== undefined ? { maxSide: opts.imageMaxSide } : {}),
    ...(opts.videoFormats !== undefined ? { restrict: { formats: opts.videoFormats } } : {}),
  });
  let text: string | null = opts.manifestText ?? null;
  if (text === null && opts.manifestFile !== null) {
    const mf = opts.manifestFile ?? manifestPathFor(file);
    text = await readIfExists(mf);
    if (text === null && opts.manifestFile !== undefined)
      throw new AppError('NOT_FOUND', `manifest not found: ${path.basename(mf)}`);
  }
  let signature: VerifyReport['signature'] = null;
  if (text !== null) {
    const check = await checkManifest(parseManifest(text), file, opts.trustedPublicKeys ?? []);
    const claim = check.manifest.claim;
    signature = {
      status: check.status,
      valid: check.valid,
      signature_valid: check.signatureValid,
      hash_matches: check.hashMatches,
      key_id: check.keyId,
      trusted_key: check.trustedKey,
      manifest_payload: check.watermarkPayload,
      payload_matches: check.watermarkPayload && det.payload ? check.watermarkPayload === det.payload : null,
      created: String(claim.created),
      engine: String(claim.assertions['avatar.engine']?.name ?? ''),
      portrait_id: claim.assertions['avatar.portrait']?.id ?? null,
    };
  }
  return {
    watermark: {
      present: det.present,
      payload: det.payload,
      windows: det.windows,
      detected_windows: det.detectedWindows,
      slot_time: det.payload ? new Date(slotTime(parsePayloadHex(det.payload).slot)).toISOString() : null,
    },
    signature,
  };
}
