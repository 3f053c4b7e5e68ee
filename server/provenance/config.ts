/**
 * The provenance slice of the config (server/config.ts holds it as `config.provenance`): its type, defaults, env
 * variables and validation, kept here so that the config module needs only a few lines for it.
 */
import { normalizePublicKey } from './keys.js';

export const MARK_CORNERS = ['top-left', 'top-right', 'bottom-left', 'bottom-right'] as const;
export type MarkCorner = (typeof MARK_CORNERS)[number];

export interface ProvenanceConfig {
  mark: {
    /** Burn the visible "AI avatar" mark into every synthesized frame; default true (env AVATAR_MARK=off to disable). */
    enabled: boolean;
    /** Corner of the mark; default 'bottom-right' (env AVATAR_MARK_CORNER). Set by the operator, never by viewers. */
    corner: MarkCorner;
    /** Opacity of the mark's text, 0.2..1 (its backing box is 60% of it); default 0.85 (env AVATAR_MARK_OPACITY). */
    opacity: number;
  };
  watermark: {
    /** Embed the invisible watermark in every synthesized frame; default true (env AVATAR_WATERMARK=off). */
    enabled: boolean;
    /** Amplitude in luma levels, integer 1..4; default 2 (PSNR >= 42 dB). */
    strength: number;
  };
  /**
   * The server's Ed25519 signing key (PKCS#8 PEM), generated there with mode 0600 when missing; default null:
   * <dataDir>/provenance/ed25519.pem (env AVATAR_SIGNING_KEY).
   */
  keyFile: string | null;
  /**
   * Other Ed25519 public keys whose manifests verify as valid (e.g. the other hosts of this deployment), each SPKI
   * DER base64 (a manifest's `signature.publicKey`) or PEM; the server's own key is always trusted. A correct
   * signature by any other key is reported as 'untrusted'. Default [] (env AVATAR_TRUSTED_KEYS, comma-separated
   * base64).
   */
  trustedKeys: string[];
}

export function defaultProvenanceConfig(): ProvenanceConfig {
  return {
    mark: { enabled: true, corner: 'bottom-right', opacity: 0.85 },
    watermark: { enabled: true, strength: 2 },
    keyFile: null,
    trustedKeys: [],
  };
}

function onOff(v: string, name: string, fail: (m: string) => never): boolean {
  if (/^(1|on|true|yes)$/i.test(v)) return true;
  if (/^(0|off|false|no)$/i.test(v)) return false;
  return fail(`env ${name} must be on or off (got "${v}")`);
}

/** Applies the env variables named above (AVATAR_MARK, AVATAR_MARK_CORNER, AVATAR_MARK_OPACITY, AVATAR_WATERMARK,
 * AVATAR_SIGNING_KEY, AVATAR_TRUSTED_KEYS) to `p`, in place. */
export function applyProvenanceEnv(
  p: ProvenanceConfig,
  env: Record<string, string | undefined>,
  resolvePath: (f: string) => string,
  fail: (m: string) => never,
): void {
  if (env.AVATAR_MARK) p.mark.enabled = onOff(env.AVATAR_MARK, 'AVATAR_MARK', fail);
  if (env.AVATAR_MARK_CORNER) p.mark.corner = env.AVATAR_MARK_CORNER as MarkCorner;
  if (env.AVATAR_MARK_OPACITY) p.mark.opacity = Number(env.AVATAR_MARK_OPACITY);
  if (env.AVATAR_WATERMARK) p.watermark.enabled = onOff(env.AVATAR_WATERMARK, 'AVATAR_WATERMARK', fail);
  if (env.AVATAR_SIGNING_KEY) p.keyFile = resolvePath(env.AVATAR_SIGNING_KEY);
  if (env.AVATAR_TRUSTED_KEYS !== undefined)
    p.trustedKeys = env.AVATAR_TRUSTED_KEYS.split(',')
      .map((k) => k.trim())
      .filter((k) => k !== '');
}

/** Checks the slice; `fail` throws CONFIG_INVALID naming the option. */
export function validateProvenanceConfig(p: ProvenanceConfig, fail: (m: string) => never): void {
  if (!MARK_CORNERS.includes(p.mark.corner)) fail(`"provenance.mark.corner" must be ${MARK_CORNERS.join('|')}`);
  if (!(typeof p.mark.opacity === 'number' && p.mark.opacity >= 0.2 && p.mark.opacity <= 1)) {
    fail('"provenance.mark.opacity" must be a number in 0.2..1');
  }
  if (!Number.isInteger(p.watermark.strength) || p.watermark.strength < 1 || p.watermark.strength > 4) {
    fail('"provenance.watermark.strength" must be an integer in 1..4');
  }
  if (p.keyFile !== null && (typeof p.keyFile !== 'string' || p.keyFile === ''))
    fail('"provenance.keyFile" must be a path');
  if (!Array.isArray(p.trustedKeys)) fail('"provenance.trustedKeys" must be an array of public keys');
  p.trustedKeys.forEach((k, i) => {
    try {
      if (typeof k !== 'string') throw new TypeError('not a string');
      normalizePublicKey(k);
    } catch (err) {
      fail(
        `"provenance.trustedKeys[${i}]" must be an Ed25519 public key (SPKI DER base64 or PEM): ${(err as Error).message}`,
      );
    }
  });
}
