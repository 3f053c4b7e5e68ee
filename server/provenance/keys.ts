/**
 * The server's Ed25519 signing key: a PKCS#8 PEM file (default <dataDir>/provenance/ed25519.pem), generated once with
 * node:crypto and written with mode 0600 when missing. A key file readable by others is refused.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { AppError } from '../errors.js';

export interface SigningKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** The public key, SPKI DER, base64. */
  publicKeyB64: string;
  /** First 16 hex digits of sha256(SPKI DER): names the key in manifests. */
  keyId: string;
  file: string;
}

/** The key file to use: the configured one, else <dataDir>/provenance/ed25519.pem. */
export function keyFilePath(keyFile: string | null, dataDir: string): string {
  return keyFile ?? path.join(dataDir, 'provenance', 'ed25519.pem');
}

export function publicKeyId(spkiDer: Buffer): string {
  return createHash('sha256').update(spkiDer).digest('hex').slice(0, 16);
}

/**
 * An Ed25519 public key given as SPKI DER base64 (what a manifest's `signature.publicKey` holds) or as a PEM public
 * key, returned as SPKI DER base64, the form checkManifest compares.
 * @throws TypeError when it is not an Ed25519 public key.
 */
export function normalizePublicKey(text: string): string {
  let key: KeyObject;
  try {
    key = text.includes('-----BEGIN')
      ? createPublicKey(text)
      : createPublicKey({ key: Buffer.from(text.trim(), 'base64'), format: 'der', type: 'spki' });
  } catch (err) {
    throw new TypeError('not a public key (SPKI DER base64 or PEM)', { cause: err });
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new TypeError('not an Ed25519 key');
  return key.export({ type: 'spki', format: 'der' }).toString('base64');
}

/**
 * Loads the key, creating it (and its folder, mode 0700) when the file does not exist.
 * @throws AppError('SIGNING_KEY_INVALID') for an unreadable, non-Ed25519 or group/world-readable key file.
 */
export async function loadOrCreateSigningKey(file: string): Promise<SigningKey> {
  let pem: string;
  try {
    const st = await fs.stat(file);
    if (process.platform !== 'win32' && (st.mode & 0o077) !== 0) {
      throw new AppError('SIGNING_KEY_INVALID', `the signing key ${file} is readable by others: chmod 600 it`);
    }
    pem = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      if (err instanceof AppError) throw err;
      throw new AppError('SIGNING_KEY_INVALID', `cannot read the signing key ${file}`, { cause: err });
    }
    const { privateKey } = generateKeyPairSync('ed25519');
    pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    // 'wx': never overwrite a key another process wrote meanwhile; that one wins.
    try {
      await fs.writeFile(file, pem, { mode: 0o600, flag: 'wx' });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      pem = await fs.readFile(file, 'utf8');
    }
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(pem);
  } catch (err) {
    throw new AppError('SIGNING_KEY_INVALID', `the signing key ${file} is not a PEM private key`, { cause: err });
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') {
    throw new AppError('SIGNING_KEY_INVALID', `the signing key ${file} is not an Ed25519 key`);
  }
  const publicKey = createPublicKey(privateKey);
  const der = publicKey.export({ type: 'spki', format: 'der' });
  return { privateKey, publicKey, publicKeyB64: der.toString('base64'), keyId: publicKeyId(der), file };
}
