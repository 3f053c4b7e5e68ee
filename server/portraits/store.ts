/**
 * The portrait store: uploaded portraits with their consent records, on disk under `<dataDir>/portraits/`:
 *
 *   <id>.json        the record (its presence is what makes the portrait exist)
 *   <id>.orig.<ext>  the uploaded bytes, unchanged
 *   <id>.png         the normalised copy (EXIF orientation applied, sRGB, no alpha, long side <= normalizedMaxSide)
 *
 *   consent.log      the consent log: one JSON line per event (consent given with its text and version, portrait used
 *                    in a room, portrait deleted), append-only, kept when a portrait is deleted, readable by the
 *                    owner (readConsentLog)
 *
 * Every portrait belongs to the API key (name) that uploaded it: list/get/image/loadRgb/delete with an `owner` see
 * only that owner's portraits (another owner's id is NOT_FOUND, so nothing tells whether it exists).
 *
 * Every file is written to a temporary name and renamed, images before the record, so a failed or interrupted upload
 * never leaves a half portrait: at open, temporary files and images without a record are removed.
 * Uploads are checked in order: consent, size, the owner's quota (portraits and bytes stored, with the uploads of
 * that owner in progress counted), magic bytes, pixel limits (from the header, before decoding), decoding, then the
 * optional face check, and the quota again with the normalised copy's size.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import sharp, { type Metadata } from 'sharp';
import type { RgbImage } from '../types/image.js';
import { AppError } from '../errors.js';
import type { Logger } from '../logger.js';
import { imageContentType, imageExtension, sniffImage, type ImageKind } from './sniff.js';

export interface PortraitRecord {
  id: string;
  name: string;
  uploader: string | null;
  /** Kept for the consent log only; never returned by the public API. */
  uploaderIp: string;
  /** The API key (name) that uploaded it; records from before keys existed belong to 'operator'. */
  owner?: string;
  /** What the uploader agreed to: the consent text and its version, stored with the record. */
  consent: { given: true; at: string; version?: string; text?: string };
  createdAt: string;
  /** Size of the normalised copy. */
  width: number;
  height: number;
  original: { contentType: string; bytes: number; width: number; height: number };
  /** Bytes stored for it (the upload and the normalised PNG); records from before quotas: counted at open. */
  storedBytes?: number;
  usedInRooms: { roomId: string; at: string }[];
}

/** What the REST API shows of a portrait. */
export interface PortraitSummary {
  id: string;
  name: string;
  uploader: string | null;
  width: number;
  height: number;
  createdAt: string;
  url: string;
}

export interface PortraitUpload {
  data: Buffer;
  /** The uploaded file's name (used as the default display name). */
  filename?: string;
  name?: string;
  uploader?: string;
  uploaderIp: string;
  /** The uploader confirmed their right to animate this portrait. */
  consent: boolean;
  /** The consent version the uploader was shown; absent = the current one. */
  consentVersion?: string;
  /** The API key (name) uploading; default 'operator'. */
  owner?: string;
}

/** One line of the consent log. */
export interface ConsentEvent {
  at: string;
  event: 'consent' | 'used' | 'deleted';
  portraitId: string;
  owner: string;
  /** 'consent': the text and version agreed to, and the uploader's address. */
  version?: string;
  text?: string;
  ip?: string;
  /** 'used': the room. */
  roomId?: string;
}

/** Refuses a portrait without a usable face by throwing AppError('NO_FACE'); plugged in by the avatar engine. */
export type FaceCheck = (rgb: RgbImage) => Promise<void>;

export interface PortraitStoreOptions {
  /** The store's folder (created when missing). */
  dir: string;
  maxBytes: number;
  maxPixels: number;
  minSide: number;
  /** Long side of the normalised copy; default 1024. */
  normalizedMaxSide?: number;
  checkFace?: FaceCheck;
  /** The consent text and version uploads agree to (config.consent). */
  consent?: { text: string; version: string };
  /** What one owner may store (config.quotas); default no limit. */
  quota?: { portraits: number; bytes: number };
  log: Logger;
}

const DEFAULT_OWNER = 'operator';
const ownerOf = (rec: PortraitRecord): string => rec.owner ?? DEFAULT_OWNER;

const ID_RE = /^[a-f0-9]{32}$/;
const TMP_MARK = '.tmp-';

function clean(text: string | undefined, max: number): string | null {
  if (text === undefined) return null;
  const t = text
    .replace(/[\u0000-\u001f\u007f]/g, '')
    .trim()
    .slice(0, max);
  return t.length > 0 ? t : null;
}

export class PortraitStore {
  readonly dir: string;
  readonly #opts: Required<Omit<PortraitStoreOptions, 'checkFace' | 'consent' | 'quota'>> & {
    checkFace?: FaceCheck;
    consent?: { text: string; version: string };
    quota?: { portraits: number; bytes: number };
  };
  readonly #records = new Map<string, PortraitRecord>();
  /** Uploads in progress per owner (portraits, bytes reserved), counted against the quota; none: no entry. */
  readonly #pending = new Map<string, { portraits: number; bytes: number }>();
  /** Record writes are serialized so that concurrent markUsed() calls never lose an entry. */
  #writes: Promise<void> = Promise.resolve();

  private constructor(opts: PortraitStoreOptions) {
    this.dir = opts.dir;
    this.#opts = { normalizedMaxSide: 1024, ...opts };
  }

  /** Opens (creating when needed) the store folder, loads the records, and removes leftovers of failed writes. */
  static async open(opts: PortraitStoreOptions): Promise<PortraitStore> {
    const store = new PortraitStore(opts);
    await fs.mkdir(store.dir, { recursive: true });
    const names = await fs.readdir(store.dir);
    for (const n of names) {
      if (!n.endsWith('.json') || n.includes(TMP_MARK)) continue;
      const id = n.slice(0, -5);
      if (!ID_RE.test(id)) continue;
      try {
        const rec = JSON.parse(await fs.readFile(path.join(store.dir, n), 'utf8')) as PortraitRecord;
        if (rec.id !== id) continue;
        // Records from before quotas: the upload's size plus the normalised copy's, as stored.
        if (typeof rec.storedBytes !== 'number') {
          const png = await fs.stat(store.#pngFile(id)).then(
            (st) => st.size,
            () => 0,
          );
          rec.storedBytes = (rec.original?.bytes ?? 0) + png;
        }
        store.#records.set(id, rec);
      } catch (err) {
        opts.log.warn('unreadable portrait record skipped', { file: n, err });
      }
    }
    for (const n of names) {
      const id = n.slice(0, 32);
      if (n.includes(TMP_MARK) || (ID_RE.test(id) && !n.endsWith('.json') && !store.#records.has(id))) {
        await fs.rm(path.join(store.dir, n), { force: true });
      }
    }
    opts.log.info('portrait store opened', { portraits: store.#records.size });
    return store;
  }

  get size(): number {
    return this.#records.size;
  }

  /** What `owner` stores: portraits and bytes (uploads and normalised copies). */
  usage(owner: string): { portraits: number; bytes: number } {
    let portraits = 0;
    let bytes = 0;
    for (const r of this.#records.values()) {
      if (ownerOf(r) !== owner) continue;
      portraits++;
      bytes += r.storedBytes ?? r.original.bytes;
    }
    return { portraits, bytes };
  }

  /**
   * Refuses an upload of `bytes` more by `owner` beyond the quota, counting the owner's uploads in progress.
   * @throws AppError('QUOTA_EXCEEDED')
   */
  #checkQuota(owner: string, bytes: number, portraits: number): void {
    const q = this.#opts.quota;
    if (!q) return;
    const used = this.usage(owner);
    const pending = this.#pending.get(owner) ?? { portraits: 0, bytes: 0 };
    if (used.portraits + pending.portraits + portraits > q.portraits)
      throw new AppError('QUOTA_EXCEEDED', `this API key stores its most portraits (${q.portraits}): delete one first`);
    if (used.bytes + pending.bytes + bytes > q.bytes) {
      throw new AppError(
        'QUOTA_EXCEEDED',
        `this API key would store more than ${q.bytes} bytes (${used.bytes} stored): delete portraits first`,
      );
    }
  }

  /** Checks, normalises and stores an upload. @throws AppError with the reason it was refused. */
  async add(up: PortraitUpload): Promise<PortraitRecord> {
    const o = this.#opts;
    const owner = up.owner ?? DEFAULT_OWNER;
    if (!up.consent)
      throw new AppError('CONSENT_REQUIRED', 'confirm that you have the right to animate this portrait (consent=true)');
    const terms = o.consent;
    if (terms && up.consentVersion !== undefined && up.consentVersion !== terms.version) {
      throw new AppError(
        'CONSENT_REQUIRED',
        `the consent text changed (now version ${terms.version}): read it again and confirm (GET /api/consent)`,
      );
    }
    if (up.data.length === 0) throw new AppError('BAD_REQUEST', 'empty file');
    if (up.data.length > o.maxBytes) throw new AppError('PAYLOAD_TOO_LARGE', `file larger than ${o.maxBytes} bytes`);
    this.#checkQuota(owner, up.data.length, 1);
    // Reserved while this upload is checked and written, so that concurrent uploads of one owner cannot overshoot;
    // given back once the record counts (or the upload failed).
    const p = this.#pending.get(owner) ?? { portraits: 0, bytes: 0 };
    p.portraits++;
    p.bytes += up.data.length;
    this.#pending.set(owner, p);
    let reserved = true;
    const release = (): void => {
      if (!reserved) return;
      reserved = false;
      p.portraits--;
      p.bytes -= up.data.length;
      if (p.portraits === 0) this.#pending.delete(owner);
    };
    try {
      return await this.#store(up, owner, release);
    } finally {
      release();
    }
  }

  /** add() after the cheap checks: decode, normalise, store; `counted` is called once the record counts. */
  async #store(up: PortraitUpload, owner: string, counted: () => void): Promise<PortraitRecord> {
    const o = this.#opts;
    const terms = o.consent;
    const kind = sniffImage(up.data);
    if (!kind) throw new AppError('UNSUPPORTED_MEDIA_TYPE', 'only JPEG, PNG and WebP images are accepted');
    let meta: Metadata;
    try {
      meta = await sharp(up.data, { limitInputPixels: false }).metadata();
    } catch (err) {
      throw new AppError('UNSUPPORTED_MEDIA_TYPE', 'the image cannot be decoded', { cause: err });
    }
    const w = meta.width ?? 0;
    const h = meta.height ?? 0;
    if (w * h > o.maxPixels)
      throw new AppError('IMAGE_TOO_LARGE', `image has ${w}x${h} pixels; at most ${o.maxPixels} pixels are accepted`);
    if (Math.min(w, h) < o.minSide)
      throw new AppError('IMAGE_TOO_SMALL', `image is ${w}x${h}; each side must be at least ${o.minSide} px`);
    const rgb = await this.#normalise(up.data);
    if (o.checkFace) await o.checkFace(rgb);
    const png = await sharp(Buffer.from(rgb.data.buffer, rgb.data.byteOffset, rgb.data.byteLength), {
      raw: { width: rgb.width, height: rgb.height, channels: 3 },
    })
      .png({ compressionLevel: 6 })
      .toBuffer();
    // The upload itself is reserved (pending); the normalised copy comes on top.
    this.#checkQuota(owner, png.length, 0);

    const id = randomBytes(16).toString('hex');
    const now = new Date().toISOString();
    const rec: PortraitRecord = {
      id,
      name: clean(up.name, 100) ?? clean(up.filename?.replace(/\.[^.]*$/, ''), 100) ?? 'portrait',
      uploader: clean(up.uploader, 100),
      uploaderIp: up.uploaderIp,
      owner,
      consent: { given: true, at: now, ...(terms ? { version: terms.version, text: terms.text } : {}) },
      createdAt: now,
      width: rgb.width,
      height: rgb.height,
      original: { contentType: imageContentType[kind], bytes: up.data.length, width: w, height: h },
      storedBytes: up.data.length + png.length,
      usedInRooms: [],
    };
    const written: string[] = [];
    try {
      written.push(await this.#writeAtomic(this.#origFile(id, kind), up.data));
      written.push(await this.#writeAtomic(this.#pngFile(id), png));
      await this.#serial(async () => {
        await this.#writeAtomic(this.#recordFile(id), JSON.stringify(rec, null, 2));
        this.#records.set(id, rec);
        counted();
        await this.#log({
          at: now,
          event: 'consent',
          portraitId: id,
          owner: ownerOf(rec),
          ...(terms ? { version: terms.version, text: terms.text } : {}),
          ip: up.uploaderIp,
        });
      });
    } catch (err) {
      for (const f of written) await fs.rm(f, { force: true });
      throw err;
    }
    this.#opts.log.info('portrait stored', { id, width: rec.width, height: rec.height });
    return rec;
  }

  /** All records (of `owner`, when given), newest first. */
  list(owner?: string): PortraitRecord[] {
    return [...this.#records.values()]
      .filter((r) => owner === undefined || ownerOf(r) === owner)
      .sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : 0));
  }

  /** @throws AppError('NOT_FOUND') also for another owner's portrait (when `owner` is given). */
  get(id: string, owner?: string): PortraitRecord {
    const rec = ID_RE.test(id) ? this.#records.get(id) : undefined;
    if (!rec || (owner !== undefined && ownerOf(rec) !== owner)) throw new AppError('NOT_FOUND', 'no such portrait');
    return rec;
  }

  /** The owner of a portrait. @throws AppError('NOT_FOUND') */
  ownerOf(id: string): string {
    return ownerOf(this.get(id));
  }

  /** The consent log lines of `owner` (of one portrait when `portraitId` is given), oldest first. */
  async readConsentLog(owner: string, portraitId?: string): Promise<ConsentEvent[]> {
    await this.#writes;
    let text = '';
    try {
      text = await fs.readFile(this.#consentFile(), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const out: ConsentEvent[] = [];
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        const e = JSON.parse(line) as ConsentEvent;
        if (e.owner === owner && (portraitId === undefined || e.portraitId === portraitId)) out.push(e);
      } catch {
        // A torn last line (a crash mid-append) is skipped, never rewritten: the log is append-only.
      }
    }
    return out;
  }

  has(id: string): boolean {
    return this.#records.has(id);
  }

  /** The normalised image (PNG) or the original upload. @throws AppError('NOT_FOUND') */
  async image(
    id: string,
    variant: 'normalized' | 'original' = 'normalized',
    owner?: string,
  ): Promise<{ data: Buffer; contentType: string }> {
    const rec = this.get(id, owner);
    if (variant === 'original') {
      const kind =
        (Object.keys(imageContentType) as ImageKind[]).find((k) => imageContentType[k] === rec.original.contentType) ??
        'jpeg';
      return { data: await this.#read(this.#origFile(id, kind)), contentType: rec.original.contentType };
    }
    return { data: await this.#read(this.#pngFile(id)), contentType: 'image/png' };
  }

  /** The normalised copy as packed RGB (what a room's avatar engine prepares). @throws AppError('NOT_FOUND') */
  async loadRgb(id: string, owner?: string): Promise<RgbImage> {
    this.get(id, owner);
    const { data, info } = await sharp(await this.#read(this.#pngFile(id)))
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    return {
      width: info.width,
      height: info.height,
      data: new Uint8Array(data.buffer, data.byteOffset, info.width * info.height * 3),
    };
  }

  /** Appends a room to the portrait's consent log (which rooms used it). Unknown ids are ignored. */
  markUsed(id: string, roomId: string): Promise<void> {
    return this.#serial(async () => {
      const rec = this.#records.get(id);
      if (!rec) return;
      const at = new Date().toISOString();
      const next: PortraitRecord = { ...rec, usedInRooms: [...rec.usedInRooms, { roomId, at }] };
      await this.#writeAtomic(this.#recordFile(id), JSON.stringify(next, null, 2));
      this.#records.set(id, next);
      await this.#log({ at, event: 'used', portraitId: id, owner: ownerOf(rec), roomId });
    });
  }

  /**
   * Deletes a portrait: the record first (from then on it does not exist), then its images; the consent log keeps
   * a 'deleted' line. Rooms animating it are the caller's to stop (RoomRegistry.closeRoomsUsing).
   * @throws NOT_FOUND (also for another owner's portrait when `owner` is given)
   */
  async delete(id: string, owner?: string): Promise<void> {
    const rec = this.get(id, owner);
    await this.#serial(async () => {
      await fs.rm(this.#recordFile(id), { force: true });
      this.#records.delete(id);
      await this.#log({ at: new Date().toISOString(), event: 'deleted', portraitId: id, owner: ownerOf(rec) });
    });
    const kind =
      (Object.keys(imageContentType) as ImageKind[]).find((k) => imageContentType[k] === rec.original.contentType) ??
      'jpeg';
    await fs.rm(this.#origFile(id, kind), { force: true });
    await fs.rm(this.#pngFile(id), { force: true });
    this.#opts.log.info('portrait deleted', { id });
  }

  /** Waits for pending record writes. */
  async flush(): Promise<void> {
    await this.#writes;
  }

  async #normalise(data: Buffer): Promise<RgbImage> {
    const side = this.#opts.normalizedMaxSide;
    try {
      const { data: raw, info } = await sharp(data, { failOn: 'error', limitInputPixels: this.#opts.maxPixels })
        .rotate()
        .resize({ width: side, height: side, fit: 'inside', withoutEnlargement: true })
        .flatten({ background: { r: 255, g: 255, b: 255 } })
        .toColourspace('srgb')
        .removeAlpha()
        .raw()
        .toBuffer({ resolveWithObject: true });
      if (info.channels !== 3) throw new Error(`unexpected channel count ${info.channels}`);
      return {
        width: info.width,
        height: info.height,
        data: new Uint8Array(raw.buffer, raw.byteOffset, info.width * info.height * 3),
      };
    } catch (err) {
      throw new AppError('UNSUPPORTED_MEDIA_TYPE', 'the image cannot be decoded', { cause: err });
    }
  }

  #serial(fn: () => Promise<void>): Promise<void> {
    const run = this.#writes.then(fn);
    // The chain continues after a failed write; the caller still sees the failure through `run`.
    this.#writes = run.catch(() => undefined);
    return run;
  }

  async #writeAtomic(file: string, data: string | Buffer): Promise<string> {
    const tmp = `${file}${TMP_MARK}${randomBytes(4).toString('hex')}`;
    try {
      await fs.writeFile(tmp, data);
      await fs.rename(tmp, file);
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
    return file;
  }

  async #read(file: string): Promise<Buffer> {
    try {
      return await fs.readFile(file);
    } catch (err) {
      throw new AppError('NOT_FOUND', 'portrait image missing', { cause: err });
    }
  }

  /** Appends one line to the consent log (O_APPEND: never rewritten). Called inside #serial. */
  async #log(e: ConsentEvent): Promise<void> {
    await fs.appendFile(this.#consentFile(), `${JSON.stringify(e)}\n`, { flag: 'a', mode: 0o600 });
  }

  #consentFile(): string {
    return path.join(this.dir, 'consent.log');
  }
  #recordFile(id: string): string {
    return path.join(this.dir, `${id}.json`);
  }
  #pngFile(id: string): string {
    return path.join(this.dir, `${id}.png`);
  }
  #origFile(id: string, kind: ImageKind): string {
    return path.join(this.dir, `${id}.orig${imageExtension[kind]}`);
  }
}

/** The public view of a record (no IP address, no consent log). */
export function summarize(rec: PortraitRecord, baseUrl = ''): PortraitSummary {
  return {
    id: rec.id,
    name: rec.name,
    uploader: rec.uploader,
    width: rec.width,
    height: rec.height,
    createdAt: rec.createdAt,
    url: `${baseUrl}/api/portraits/${rec.id}/image`,
  };
}
