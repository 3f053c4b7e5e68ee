/**
 * Provenance trust (issue 20, item 6): a correct Ed25519 signature proves only that someone holding *a* key signed the
 * claim. POST /api/verify and `avatar verify` say `valid` only for the server's own key or a key of
 * `provenance.trustedKeys`; a manifest signed by any other key reads `untrusted` (valid false) with its key id.
 * Real server on port 0, real CLI subprocess, real files (a small PNG made with sharp).
 */
import { spawn } from 'node:child_process';
import { generateKeyPairSync, createPublicKey } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { publicKeyId, keyFilePath, loadOrCreateSigningKey, type SigningKey } from '../../server/provenance/keys.js';
import { sha256File, signManifest, type Manifest } from '../../server/provenance/manifest.js';
import type { VerifyReport } from '../../server/provenance/verify.js';
import { loadConfig } from '../../server/config.js';
import { repoRoot } from '../helpers/media.js';
import { isPortFree } from '../helpers/net.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

function freshKey(): SigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const der = publicKey.export({ type: 'spki', format: 'der' });
  return { privateKey, publicKey, publicKeyB64: der.toString('base64'), keyId: publicKeyId(der), file: '' };
}

async function manifestFor(file: string, key: SigningKey): Promise<Manifest> {
  const { sha256, bytes } = await sha256File(file);
  return signManifest(
    {
      generator: 'trust-test',
      created: new Date().toISOString(),
      asset: { file: path.basename(file), sha256, bytes, mime: 'image/png' },
      engine: { name: 'portrait', pack: null },
      portrait: { id: null, sha256, file: 'p.png', consent: null },
      watermark: null,
    },
    key,
  );
}

let dir: string;
let png: string;
/** A key another host of the deployment signs with; listed in provenance.trustedKeys (PEM, to cover that form). */
const partner = freshKey();
const stranger = freshKey();

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'avatar-trust-'));
  png = path.join(dir, 'frame.png');
  await sharp({ create: { width: 96, height: 64, channels: 3, background: { r: 90, g: 120, b: 150 } } })
    .png()
    .toFile(png);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('POST /api/verify trusts only the server key and the configured keys', () => {
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer({
      provenance: { trustedKeys: [partner.publicKey.export({ type: 'spki', format: 'pem' }).toString()] },
    });
  });
  afterAll(async () => {
    await ts.stop();
    expect(await isPortFree(ts.port)).toBe(true);
  });

  async function verify(m: Manifest): Promise<NonNullable<VerifyReport['signature']>> {
    const form = new FormData();
    form.append('file', new Blob([new Uint8Array(await readFile(png))]), 'frame.png');
    form.append('manifest', new Blob([JSON.stringify(m)]), 'frame.png.provenance.json');
    const r = await fetch(`${ts.url}/api/verify`, { method: 'POST', body: form });
    expect(r.status).toBe(200);
    const j = (await r.json()) as VerifyReport;
    expect(j.signature).not.toBeNull();
    return j.signature!;
  }

  it('a fresh key: untrusted (not valid), with its key id', async () => {
    const s = await verify(await manifestFor(png, stranger));
    expect(s).toMatchObject({
      status: 'untrusted',
      valid: false,
      signature_valid: true,
      hash_matches: true,
      trusted_key: false,
      key_id: stranger.keyId,
    });
  });

  it("the server's own key: valid", async () => {
    // The server writes its key at start-up; loading it here reads that file (it never overwrites one).
    const own = await loadOrCreateSigningKey(keyFilePath(ts.config.provenance.keyFile, ts.dataDir));
    const s = await verify(await manifestFor(png, own));
    expect(s).toMatchObject({ status: 'valid', valid: true, trusted_key: true, key_id: own.keyId });
  });

  it('a key in provenance.trustedKeys: valid; a bad signature by it: invalid', async () => {
    const m = await manifestFor(png, partner);
    expect(await verify(m)).toMatchObject({ status: 'valid', valid: true, trusted_key: true, key_id: partner.keyId });
    m.claim.assertions['avatar.engine'].name = 'forged';
    expect(await verify(m)).toMatchObject({ status: 'invalid', valid: false, signature_valid: false });
  });
});

describe('avatar verify (CLI) trusts only the server key and the configured keys', () => {
  function cli(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((resolve, reject) => {
      const p = spawn(process.execPath, [path.join(repoRoot, 'bin', 'avatar.mjs'), ...args], {
        cwd: repoRoot,
        env: { ...process.env, AVATAR_DATA_DIR: path.join(dir, 'data'), AVATAR_SIGNING_KEY: '', ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      p.on('error', reject);
      p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    });
  }

  it('prints UNTRUSTED with the key id for a fresh key, VALID once that key is in AVATAR_TRUSTED_KEYS', async () => {
    const mf = path.join(dir, 'stranger.json');
    await writeFile(mf, JSON.stringify(await manifestFor(png, stranger)));
    const out = path.join(dir, 'report.json');
    const r1 = await cli(['verify', png, '--manifest', mf, '--json', out], {});
    expect(r1.code, r1.stderr).toBe(0);
    expect(r1.stdout).toContain('signature: UNTRUSTED');
    expect(r1.stdout).toContain(`key ${stranger.keyId}, NOT a trusted key`);
    const j1 = JSON.parse(await readFile(out, 'utf8')) as VerifyReport;
    expect(j1.signature).toMatchObject({ status: 'untrusted', valid: false, key_id: stranger.keyId });

    const spki = createPublicKey(stranger.privateKey).export({ type: 'spki', format: 'der' }).toString('base64');
    const r2 = await cli(['verify', png, '--manifest', mf], { AVATAR_TRUSTED_KEYS: spki });
    expect(r2.code, r2.stderr).toBe(0);
    expect(r2.stdout).toContain('signature: VALID');
    expect(r2.stdout).toContain('a trusted key');
  }, 60_000);
});

describe('provenance.trustedKeys config', () => {
  it('accepts base64 SPKI (env, comma-separated) and PEM; refuses what is not an Ed25519 public key', () => {
    const b64 = partner.publicKeyB64;
    expect(loadConfig({ AVATAR_TRUSTED_KEYS: ` ${b64}, ${stranger.publicKeyB64} ` }).provenance.trustedKeys).toEqual([
      b64,
      stranger.publicKeyB64,
    ]);
    expect(loadConfig({}).provenance.trustedKeys).toEqual([]);
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 })
      .publicKey.export({ type: 'spki', format: 'der' })
      .toString('base64');
    for (const bad of ['not-a-key', rsa]) {
      expect(() => loadConfig({ AVATAR_TRUSTED_KEYS: bad })).toThrow(/provenance\.trustedKeys\[0\]/);
    }
  });
});
