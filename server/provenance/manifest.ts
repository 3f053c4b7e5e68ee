/**
 * Provenance manifests of offline renders: a signed claim about one video file, written as a sidecar
 * `<video>.provenance.json` next to it.
 *
 * Shaped after C2PA's model (a claim made of assertions, bound to the asset by a hash, signed by the claim generator's
 * key, with a "soft binding" to a watermark that survives when the manifest is stripped), but as plain JSON signed with
 * Ed25519 over its canonical form (keys sorted, no whitespace), not a JUMBF box with a COSE signature inside the MP4:
 *   - the hard binding is the sha256 of the whole video file, exactly the bytes a viewer has; an embedded manifest
 *     needs a hasher that skips its own box and a box-aware MP4 writer, for no gain here;
 *   - MP4 boxes are dropped by most re-muxers and upload pipelines anyway; what survives re-encoding is the watermark
 *     (the soft binding), whose payload the manifest names.
 */
import { createHash, createPublicKey, sign, verify } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { AppError } from '../errors.js';
import type { SigningKey } from './keys.js';
import { publicKeyId } from './keys.js';

export const MANIFEST_FORMAT = 'live-avatar-provenance/1';
/** IPTC digital source type for media created by a trained model. */
export const TRAINED_ALGORITHMIC_MEDIA = 'http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia';

/** The sidecar manifest's path for a video. */
export function manifestPathFor(video: string): string {
  return `${video}.provenance.json`;
}

export interface ClaimInput {
  generator: string;
  /** ISO time of the render. */
  created: string;
  asset: { file: string; sha256: string; bytes: number; mime: string };
  engine: { name: string; pack: { name: string; version: string; sha256: string } | null };
  portrait: {
    /** The portrait store's id when the portrait came from the store, else null. */
    id: string | null;
    sha256: string;
    file: string;
    /** The consent record (what the uploader agreed to, when), or null for a local file without one. */
    consent: { given: boolean; at: string; version: string | null; textSha256: string | null } | null;
  };
  watermark: { algorithm: string; payload: string; renderId: string } | null;
}

export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  claim: {
    claim_generator: string;
    created: string;
    asset: ClaimInput['asset'];
    assertions: {
      'c2pa.actions': {
        actions: { action: 'c2pa.created'; digitalSourceType: string; softwareAgent: string; when: string }[];
      };
      'avatar.engine': ClaimInput['engine'];
      'avatar.portrait': ClaimInput['portrait'];
      'c2pa.soft-binding': ClaimInput['watermark'];
    };
  };
  signature: { alg: 'Ed25519'; keyId: string; publicKey: string; value: string };
}

/** JSON with object keys sorted at every level and no whitespace: the bytes that are signed. */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o)
    .filter((k) => o[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
    .join(',')}}`;
}

export async function sha256File(file: string): Promise<{ sha256: string; bytes: number }> {
  const h = createHash('sha256');
  let bytes = 0;
  for await (const chunk of createReadStream(file) as AsyncIterable<Buffer>) {
    h.update(chunk);
    bytes += chunk.length;
  }
  return { sha256: h.digest('hex'), bytes };
}

/** Builds and signs a manifest. */
export function signManifest(input: ClaimInput, key: SigningKey): Manifest {
  const claim: Manifest['claim'] = {
    claim_generator: input.generator,
    created: input.created,
    asset: input.asset,
    assertions: {
      'c2pa.actions': {
        actions: [
          {
            action: 'c2pa.created',
            digitalSourceType: TRAINED_ALGORITHMIC_MEDIA,
            softwareAgent: input.generator,
            when: input.created,
          },
        ],
      },
      'avatar.engine': input.engine,
      'avatar.portrait': input.portrait,
      'c2pa.soft-binding': input.watermark,
    },
  };
  const value = sign(null, Buffer.from(canonicalJson(claim)), key.privateKey).toString('base64');
  return {
    format: MANIFEST_FORMAT,
    claim,
    signature: { alg: 'Ed25519', keyId: key.keyId, publicKey: key.publicKeyB64, value },
  };
}

/** What checking a manifest against a file says. */
export interface ManifestCheck {
  /**
   * 'valid': the signature verifies, the file's sha256 matches the claim AND the key is one the operator trusts;
   * 'untrusted': the same but signed by another key (anyone can make a key and sign a correct manifest);
   * 'invalid': a bad signature or a file that is not the one signed.
   */
  status: 'valid' | 'untrusted' | 'invalid';
  /** status === 'valid'. */
  valid: boolean;
  signatureValid: boolean;
  hashMatches: boolean;
  /** The manifest's key is one of the trusted keys (the server's own, the configured list). */
  trustedKey: boolean;
  keyId: string;
  /** The watermark payload the manifest claims, or null. */
  watermarkPayload: string | null;
  manifest: Manifest;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parses a manifest. @throws AppError('MANIFEST_INVALID') when it is not one. */
export function parseManifest(text: string): Manifest {
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch (err) {
    throw new AppError('MANIFEST_INVALID', 'the provenance manifest is not JSON', { cause: err });
  }
  if (!isRecord(m) || m.format !== MANIFEST_FORMAT)
    throw new AppError('MANIFEST_INVALID', `not a ${MANIFEST_FORMAT} manifest`);
  const s = m.signature;
  const c = m.claim;
  if (!isRecord(s) || s.alg !== 'Ed25519' || typeof s.publicKey !== 'string' || typeof s.value !== 'string') {
    throw new AppError('MANIFEST_INVALID', 'the manifest has no Ed25519 signature');
  }
  if (!isRecord(c) || !isRecord(c.asset) || typeof c.asset.sha256 !== 'string' || !isRecord(c.assertions)) {
    throw new AppError('MANIFEST_INVALID', 'the manifest has no claim about an asset');
  }
  return m as unknown as Manifest;
}

/**
 * Checks a manifest against a file: Ed25519 signature over the canonical claim, the file's sha256, and whether the
 * signing key is trusted. A correct signature proves only that the holder of *some* key signed the claim, so it is
 * 'valid' only for a key in `trustedPublicKeys`.
 * @param trustedPublicKeys SPKI DER base64 of the keys the operator trusts (the server's own, the configured list).
 */
export async function checkManifest(
  manifest: Manifest,
  file: string,
  trustedPublicKeys: readonly string[] = [],
): Promise<ManifestCheck> {
  let signatureValid = false;
  let keyId = '';
  let trustedKey = false;
  try {
    const der = Buffer.from(manifest.signature.publicKey, 'base64');
    keyId = publicKeyId(der);
    // Compared as DER bytes (re-encoded), so a manifest cannot pass with another spelling of the same base64.
    trustedKey = trustedPublicKeys.includes(der.toString('base64'));
    const pub = createPublicKey({ key: der, format: 'der', type: 'spki' });
    signatureValid =
      pub.asymmetricKeyType === 'ed25519' &&
      verify(null, Buffer.from(canonicalJson(manifest.claim)), pub, Buffer.from(manifest.signature.value, 'base64'));
  } catch {
    // A malformed key or signature is an invalid signature, not an error of the verifier.
    signatureValid = false;
  }
  const { sha256 } = await sha256File(file);
  const hashMatches = sha256 === manifest.claim.asset.sha256;
  const soft = manifest.claim.assertions['c2pa.soft-binding'];
  const status = !signatureValid || !hashMatches ? 'invalid' : trustedKey ? 'valid' : 'untrusted';
  return {
    status,
    valid: status === 'valid',
    signatureValid,
    hashMatches,
    trustedKey,
    keyId,
    watermarkPayload: isRecord(soft) && typeof soft.payload === 'string' ? soft.payload : null,
    manifest,
  };
}

/** Writes a manifest atomically (temporary name, then rename). */
export async function writeManifest(file: string, manifest: Manifest): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  await fs.writeFile(tmp, `${JSON.stringify(manifest, null, 2)}\n`);
  await fs.rename(tmp, file);
}
