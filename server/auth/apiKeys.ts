/**
 * API keys for the management calls (portraits, rooms): `Authorization: Bearer <key>`. The operator configures them
 * (`AVATAR_API_KEYS=name1:secret1,name2:secret2` or `auth.apiKeys` in the config file); a key's name is who owns what
 * it uploads and creates. With none configured, the server keeps one for the local operator in
 * `<dataDir>/operator-key` (created once, mode 0600) and `npm start` prints a studio link that signs the browser in.
 *
 * Secrets are compared as SHA-256 digests in constant time, against every key (no early exit on the first match).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { AppError } from '../errors.js';

export interface ApiKey {
  name: string;
  secret: string;
}

/** The name the generated operator key gets. */
export const OPERATOR_KEY_NAME = 'operator';
/** Generated keys: `ak_` + 32 random bytes, base64url. */
export const newApiKeySecret = (): string => `ak_${randomBytes(32).toString('base64url')}`;

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

export class ApiKeys {
  readonly #keys: { name: string; digest: Buffer }[];

  constructor(keys: readonly ApiKey[]) {
    this.#keys = keys.map((k) => ({ name: k.name, digest: digest(k.secret) }));
  }

  get size(): number {
    return this.#keys.length;
  }

  /** The key's name for a secret, or null. */
  match(secret: string): string | null {
    const d = digest(secret);
    let found: string | null = null;
    for (const k of this.#keys) if (timingSafeEqual(k.digest, d) && found === null) found = k.name;
    return found;
  }

  /**
   * The owner named by an `Authorization` header.
   * @throws AppError('API_KEY_REQUIRED') without a bearer credential, ('API_KEY_INVALID') for an unknown one.
   */
  authenticate(authorization: string | undefined): string {
    const m = /^Bearer\s+(\S{1,512})\s*$/i.exec(authorization ?? '');
    if (!m)
      throw new AppError(
        'API_KEY_REQUIRED',
        'send an API key as Authorization: Bearer <key> (npm start prints a studio link with one)',
      );
    const name = this.match(m[1]!);
    if (name === null) throw new AppError('API_KEY_INVALID', 'unknown API key');
    return name;
  }
}

/**
 * Parses `name1:secret1,name2:secret2`. Names: 1-64 letters, digits, `_`, `-`, `.`, `@`; secrets: at least 16
 * characters without spaces or commas.
 * @throws AppError('CONFIG_INVALID') naming the bad entry (never the secret).
 */
export function parseApiKeys(text: string): ApiKey[] {
  const out: ApiKey[] = [];
  for (const [i, part] of text.split(',').entries()) {
    const item = part.trim();
    if (!item) continue;
    const colon = item.indexOf(':');
    const name = colon > 0 ? item.slice(0, colon) : '';
    const secret = colon > 0 ? item.slice(colon + 1) : '';
    if (!/^[A-Za-z0-9_.@-]{1,64}$/.test(name))
      throw new AppError('CONFIG_INVALID', `config: API key #${i + 1} needs a name (name:secret)`);
    if (secret.length < 16 || /\s/.test(secret)) {
      throw new AppError(
        'CONFIG_INVALID',
        `config: API key "${name}" must have a secret of at least 16 characters without spaces`,
      );
    }
    if (out.some((k) => k.name === name))
      throw new AppError('CONFIG_INVALID', `config: API key name "${name}" given twice`);
    out.push({ name, secret });
  }
  return out;
}

/** The local operator's key in `<dataDir>/operator-key`, created (mode 0600) when missing. */
export async function loadOrCreateOperatorKey(dataDir: string): Promise<ApiKey> {
  const file = path.join(dataDir, 'operator-key');
  await fs.mkdir(dataDir, { recursive: true });
  try {
    const secret = (await fs.readFile(file, 'utf8')).trim();
    if (secret.length >= 16) return { name: OPERATOR_KEY_NAME, secret };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const secret = newApiKeySecret();
  await fs.writeFile(file, `${secret}\n`, { mode: 0o600 });
  return { name: OPERATOR_KEY_NAME, secret };
}
