import { describe, expect, it } from 'vitest';
import { baseUrl } from '../../server/http/api.js';
import { multipartBoundary, parseMultipart } from '../../server/http/multipart.js';
import { Router } from '../../server/http/router.js';
import { contentTypeFor, resolveInside } from '../../server/http/static.js';
import { defaultConfig } from '../../server/config.js';
import { AppError } from '../../server/errors.js';
import { sniffImage } from '../../server/portraits/sniff.js';

describe('router', () => {
  const r = new Router<string>()
    .add('GET', '/api/portraits', 'list')
    .add('POST', '/api/portraits', 'upload')
    .add('GET', '/api/portraits/:id/image', 'image')
    .add('DELETE', '/api/portraits/:id', 'delete')
    .add('GET', '/dist/*', 'dist');

  it('matches literals, parameters and a trailing wildcard', () => {
    expect(r.match('GET', '/api/portraits')).toMatchObject({ kind: 'found', handler: 'list' });
    expect(r.match('GET', '/api/portraits/abc/image')).toMatchObject({
      kind: 'found',
      handler: 'image',
      params: { id: 'abc' },
    });
    expect(r.match('GET', '/dist/a/b.js')).toMatchObject({ kind: 'found', handler: 'dist', params: { '*': 'a/b.js' } });
    expect(r.match('HEAD', '/api/portraits')).toMatchObject({ kind: 'found', handler: 'list' });
  });
  it('answers not-found and method-not-allowed with the allowed methods', () => {
    expect(r.match('GET', '/nope').kind).toBe('not-found');
    expect(r.match('GET', '/api/portraits/abc/image/x').kind).toBe('not-found');
    expect(r.match('GET', '/api/%E0%A4%A').kind).toBe('not-found');
    const m = r.match('PUT', '/api/portraits');
    expect(m).toEqual({ kind: 'method-not-allowed', allow: ['GET', 'POST'] });
  });
});

describe('multipart', () => {
  it('reads the boundary and splits parts with binary content', () => {
    const b = multipartBoundary('multipart/form-data; boundary="----x1"');
    expect(b).toBe('----x1');
    expect(multipartBoundary('application/json')).toBeNull();
    const bin = Buffer.from([0, 13, 10, 45, 45, 255]);
    const body = Buffer.concat([
      Buffer.from('------x1\r\nContent-Disposition: form-data; name="consent"\r\n\r\ntrue\r\n'),
      Buffer.from(
        '------x1\r\nContent-Disposition: form-data; name="file"; filename="a \\"b\\".png"\r\nContent-Type: image/png\r\n\r\n',
      ),
      bin,
      Buffer.from('\r\n------x1--\r\n'),
    ]);
    const parts = parseMultipart(body, '----x1');
    expect(parts).toHaveLength(2);
    expect(parts[0]).toMatchObject({ name: 'consent' });
    expect(parts[0]!.data.toString()).toBe('true');
    expect(parts[1]).toMatchObject({ name: 'file', filename: 'a "b".png', contentType: 'image/png' });
    expect(Buffer.compare(parts[1]!.data, bin)).toBe(0);
  });
  it('refuses truncated or malformed bodies with BAD_REQUEST', () => {
    const bad = [
      'nothing here',
      '--x\r\nContent-Disposition: form-data; name="a"\r\n\r\nno end',
      '--x\r\nX: y\r\n\r\nv\r\n--x--',
      '--x\r\nContent-Disposition: form-data\r\n\r\nv\r\n--x--',
    ];
    for (const s of bad) {
      let code = 'none';
      try {
        parseMultipart(Buffer.from(s), 'x');
      } catch (err) {
        code = err instanceof AppError ? err.code : 'other';
      }
      expect(code).toBe('BAD_REQUEST');
    }
  });
});

describe('static path resolution', () => {
  it('stays inside the root', () => {
    expect(resolveInside('/srv/client', 'studio.html')).toBe('/srv/client/studio.html');
    expect(resolveInside('/srv/client', 'dist/app.js')).toBe('/srv/client/dist/app.js');
    for (const p of [
      '../secret',
      'dist/../../x',
      '/etc/passwd'.slice(1).replace('etc', '..'),
      '.env',
      'a\0b',
      'a\\..\\b',
      '',
    ]) {
      expect(resolveInside('/srv/client', p)).toBeNull();
    }
    expect(contentTypeFor('a.js')).toMatch(/javascript/);
    expect(contentTypeFor('a.html')).toMatch(/text\/html/);
  });
});

describe('image sniffing and base URLs', () => {
  it('recognizes JPEG, PNG and WebP by magic bytes only', () => {
    expect(sniffImage(Buffer.from([0xff, 0xd8, 0xff, 0xe0]))).toBe('jpeg');
    expect(sniffImage(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))).toBe('png');
    expect(sniffImage(Buffer.from('RIFF\x10\x00\x00\x00WEBPVP8 ', 'latin1'))).toBe('webp');
    expect(sniffImage(Buffer.from('hello, this is text'))).toBeNull();
    expect(sniffImage(Buffer.from('GIF89a'))).toBeNull();
  });
  it('builds links from publicUrl or a sane Host header', () => {
    const c = defaultConfig();
    expect(baseUrl(c, { host: 'example.com:8080' }, 1)).toBe('http://example.com:8080');
    expect(baseUrl(c, { host: 'example.com', 'x-forwarded-proto': 'https' }, 1)).toBe('https://example.com');
    expect(baseUrl(c, { host: 'evil.com/<script>' }, 8080)).toBe('http://localhost:8080');
    expect(baseUrl({ ...c, publicUrl: 'https://avatar.example/' }, { host: 'x' }, 1)).toBe('https://avatar.example');
  });
});
