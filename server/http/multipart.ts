/**
 * A small multipart/form-data parser for a fully buffered body (the body is size-capped before it gets here).
 * Pure: Buffer in, parts out. Refuses malformed input with AppError('BAD_REQUEST').
 */
import { AppError } from '../errors.js';

export interface FormPart {
  /** The form field name. */
  name: string;
  /** The file name, for file fields. */
  filename?: string;
  /** The part's Content-Type, when given. */
  contentType?: string;
  data: Buffer;
}

/** Most parts a form may have (the upload form has 4). */
export const MAX_PARTS = 16;

/** Reads the boundary out of a `multipart/form-data; boundary=...` content type; null when it is not multipart. */
export function multipartBoundary(contentType: string | undefined): string | null {
  if (!contentType) return null;
  const [type, ...params] = contentType.split(';');
  if (type?.trim().toLowerCase() !== 'multipart/form-data') return null;
  for (const p of params) {
    const eq = p.indexOf('=');
    if (eq === -1) continue;
    if (p.slice(0, eq).trim().toLowerCase() !== 'boundary') continue;
    let v = p.slice(eq + 1).trim();
    if (v.startsWith('"') && v.endsWith('"') && v.length >= 2) v = v.slice(1, -1);
    if (v.length >= 1 && v.length <= 70) return v;
  }
  return null;
}

function bad(message: string): never {
  throw new AppError('BAD_REQUEST', message);
}

/** Parses `Content-Disposition: form-data; name="x"; filename="y"` parameters. */
function dispositionParams(value: string): Record<string, string> {
  const out: Record<string, string> = {};
  const re = /;\s*([A-Za-z0-9_*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(value)) !== null) {
    out[m[1]!.toLowerCase()] = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : m[3]!.trim();
  }
  return out;
}

/** Splits a multipart body into its parts. */
export function parseMultipart(body: Buffer, boundary: string): FormPart[] {
  const delim = Buffer.from(`--${boundary}`);
  const parts: FormPart[] = [];
  let pos = body.indexOf(delim);
  if (pos === -1) bad('multipart body has no boundary');
  for (;;) {
    pos += delim.length;
    // "--" after a delimiter ends the body.
    if (body[pos] === 0x2d && body[pos + 1] === 0x2d) break;
    if (body[pos] === 0x0d && body[pos + 1] === 0x0a) pos += 2;
    else bad('malformed multipart delimiter');
    const headerEnd = body.indexOf('\r\n\r\n', pos);
    if (headerEnd === -1) bad('malformed multipart part headers');
    const headerText = body.subarray(pos, headerEnd).toString('utf8');
    if (headerText.length > 4096) bad('multipart part headers too long');
    const next = body.indexOf(Buffer.concat([Buffer.from('\r\n'), delim]), headerEnd + 4);
    if (next === -1) bad('multipart body is truncated');
    const headers: Record<string, string> = {};
    for (const line of headerText.split('\r\n')) {
      const colon = line.indexOf(':');
      if (colon <= 0) bad('malformed multipart header line');
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    const disp = headers['content-disposition'];
    if (!disp || !/^form-data\b/i.test(disp)) bad('multipart part without form-data disposition');
    const params = dispositionParams(disp);
    if (!params.name) bad('multipart part without a name');
    const part: FormPart = { name: params.name, data: body.subarray(headerEnd + 4, next) };
    if (params.filename !== undefined) part.filename = params.filename;
    if (headers['content-type']) part.contentType = headers['content-type'];
    parts.push(part);
    if (parts.length > MAX_PARTS) bad('too many multipart parts');
    pos = next + 2;
  }
  return parts;
}
