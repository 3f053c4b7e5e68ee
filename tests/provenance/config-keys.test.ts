/** The provenance config slice (env + validation) and the signing key file (created 0600, refused when unsafe). */
import { generateKeyPairSync } from 'node:crypto';
import { chmod, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../server/config.js';
import { keyFilePath, loadOrCreateSigningKey } from '../../server/provenance/keys.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'avatar-keys-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('provenance config', () => {
  it('defaults on, bottom-right; env sets the operator choices; bad values are CONFIG_INVALID', () => {
    const d = loadConfig({}).provenance;
    expect(d).toMatchObject({
      mark: { enabled: true, corner: 'bottom-right' },
      watermark: { enabled: true, strength: 2 },
      keyFile: null,
    });
    const c = loadConfig({
      AVATAR_MARK: 'off',
      AVATAR_MARK_CORNER: 'top-left',
      AVATAR_MARK_OPACITY: '0.5',
      AVATAR_WATERMARK: 'off',
      AVATAR_SIGNING_KEY: 'k.pem',
    }).provenance;
    expect(c).toMatchObject({
      mark: { enabled: false, corner: 'top-left', opacity: 0.5 },
      watermark: { enabled: false },
    });
    expect(c.keyFile).toBe(path.resolve('k.pem'));
    expect(() => loadConfig({ AVATAR_MARK_CORNER: 'middle' })).toThrow(/provenance.mark.corner/);
    expect(() => loadConfig({ AVATAR_MARK_OPACITY: '5' })).toThrow(/provenance.mark.opacity/);
    expect(() => loadConfig({ AVATAR_MARK: 'maybe' })).toThrow(/AVATAR_MARK/);
    expect(() => loadConfig({}, { provenance: { watermark: { strength: 9 } } })).toThrow(/strength/);
  });
});

describe('signing key', () => {
  it('is created once with mode 0600 and reloaded as the same key', async () => {
    const file = keyFilePath(null, dir);
    const k1 = await loadOrCreateSigningKey(file);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const k2 = await loadOrCreateSigningKey(file);
    expect(k2.publicKeyB64).toBe(k1.publicKeyB64);
    expect(k1.keyId).toMatch(/^[0-9a-f]{16}$/);
  });

  it('refuses a key readable by others, and a key that is not Ed25519', async () => {
    const file = path.join(dir, 'open.pem');
    await loadOrCreateSigningKey(file);
    await chmod(file, 0o644);
    await expect(loadOrCreateSigningKey(file)).rejects.toMatchObject({ code: 'SIGNING_KEY_INVALID' });
    const rsa = path.join(dir, 'rsa.pem');
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
    await writeFile(rsa, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    await expect(loadOrCreateSigningKey(rsa)).rejects.toMatchObject({ code: 'SIGNING_KEY_INVALID' });
    const junk = path.join(dir, 'junk.pem');
    await writeFile(junk, 'not a key', { mode: 0o600 });
    await expect(loadOrCreateSigningKey(junk)).rejects.toMatchObject({ code: 'SIGNING_KEY_INVALID' });
  });
});
