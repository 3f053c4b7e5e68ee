/**
 * `avatar verify FILE [--json OUT] [--manifest M] [--no-manifest]`
 *
 * Says whether FILE (an image or a clip) carries the avatar watermark, decodes its payload per 1-second window, and,
 * when FILE has a provenance manifest (the sidecar FILE.provenance.json that `avatar render` writes, or --manifest M),
 * checks its Ed25519 signature and the file's sha256 together with the watermark. Exit code 0 when it ran (the
 * verdict is in the output), 1 on an error (unreadable file, broken manifest), 2 on a usage error.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { createPublicKey } from 'node:crypto';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config.js';
import { setLogLevel } from '../logger.js';
import { keyFilePath, normalizePublicKey } from '../provenance/keys.js';
import { parsePayloadHex } from '../provenance/payload.js';
import { verifyFile, type VerifyReport } from '../provenance/verify.js';
import { requireFile, requireOutputDir, UsageError } from '../quality/cli.js';

const usage = `usage: avatar verify FILE [--json OUT] [--manifest M]

  FILE             an image (JPEG, PNG, WebP) or a clip (anything ffmpeg reads)
  --json OUT       also write the report as JSON:
                   {"watermark": {"present", "payload", "windows", "detected_windows", ...},
                    "signature": {"status": "valid" | "untrusted" | "invalid", ...} or null}
                   valid: signed by this server's key or one in provenance.trustedKeys
                   (env AVATAR_TRUSTED_KEYS); untrusted: a correct signature by any other key
  --manifest M     the provenance manifest (default: FILE.provenance.json when it exists)
  --no-manifest    check the watermark only
`;

/** This server's public key (SPKI DER base64) when its key file exists; verify never creates one. */
async function serverPublicKey(file: string): Promise<string | undefined> {
  try {
    return createPublicKey(await readFile(file, 'utf8'))
      .export({ type: 'spki', format: 'der' })
      .toString('base64');
  } catch {
    // No key (or not readable by this user): only the configured trusted keys are trusted.
    return undefined;
  }
}

export function formatReport(file: string, r: VerifyReport): string {
  const w = r.watermark;
  const lines = [`${file}`];
  if (w.present && w.payload) {
    const p = parsePayloadHex(w.payload);
    lines.push(
      `  watermark: PRESENT, payload ${w.payload} (id hash ${p.id.toString(16).padStart(8, '0')}, minute slot ${p.slot} = ${w.slot_time ?? '?'}), ` +
        `decoded in ${w.detected_windows}/${w.windows} one-second windows`,
    );
  } else {
    lines.push(`  watermark: not found (${w.windows} one-second window${w.windows === 1 ? '' : 's'} checked)`);
  }
  const s = r.signature;
  if (!s) lines.push('  signature: no provenance manifest');
  else {
    lines.push(
      `  signature: ${s.status.toUpperCase()} (Ed25519 ${s.signature_valid ? 'good' : 'BAD'}, file hash ${s.hash_matches ? 'matches' : 'DOES NOT MATCH'}, ` +
        `key ${s.key_id}, ${s.trusted_key ? 'a trusted key' : 'NOT a trusted key: not this server’s, not in provenance.trustedKeys'})`,
      `  manifest: created ${s.created}, engine ${s.engine}, portrait ${s.portrait_id ?? '(local file)'}, watermark payload ${s.manifest_payload ?? 'none'}` +
        (s.payload_matches === null
          ? ''
          : s.payload_matches
            ? ' (matches the decoded one)'
            : ' (DIFFERS from the decoded one)'),
    );
  }
  return `${lines.join('\n')}\n`;
}

export async function run(argv: string[]): Promise<number> {
  let values: { json?: string; manifest?: string; 'no-manifest'?: boolean; help?: boolean };
  let file: string;
  try {
    let positionals: string[];
    try {
      ({ values, positionals } = parseArgs({
        args: argv,
        strict: true,
        allowPositionals: true,
        options: {
          json: { type: 'string' },
          manifest: { type: 'string' },
          'no-manifest': { type: 'boolean' },
          help: { type: 'boolean', short: 'h' },
        },
      }));
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    if (values.help) {
      process.stderr.write(usage);
      return 0;
    }
    if (positionals.length !== 1) throw new UsageError(positionals.length ? 'give one FILE' : 'FILE is required');
    if (values.manifest && values['no-manifest'])
      throw new UsageError('--manifest and --no-manifest exclude each other');
    file = positionals[0]!;
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`avatar verify: ${err.message}\n\n${usage}`);
    return 2;
  }
  const args = values;
  const config = loadConfig(process.env);
  setLogLevel('warn');
  const input = await requireFile(file, 'file to verify');
  const manifestFile = args['no-manifest']
    ? null
    : args.manifest
      ? await requireFile(args.manifest, 'manifest')
      : undefined;
  const jsonOut = args.json ? await requireOutputDir(args.json, 'JSON report') : null;
  const own = await serverPublicKey(keyFilePath(config.provenance.keyFile, config.dataDir));
  const report = await verifyFile(input, {
    ...(manifestFile !== undefined ? { manifestFile } : {}),
    trustedPublicKeys: [...(own ? [own] : []), ...config.provenance.trustedKeys.map(normalizePublicKey)],
  });
  process.stdout.write(formatReport(file, report));
  if (jsonOut) await writeFile(jsonOut, `${JSON.stringify(report, null, 2)}\n`);
  return 0;
}
