/**
 * Attacks on the studio sign-in (issue 20, item 4), against a real server on port 0 with real HTTP requests that carry
 * the headers a browser sends (Sec-Fetch-*, Origin, Cookie):
 * - login CSRF: a cross-site navigation (or a request without Sec-Fetch headers) to `/?key=ATTACKER` must not replace
 *   the sign-in cookie: it gets a confirmation page (not framable), and only a same-origin POST from it signs in;
 *   a cross-site POST to /signin is 403 ORIGIN_REFUSED;
 * - key guessing through the address: rate limited per address (429 TOO_MANY_REQUESTS with Retry-After);
 * - cookie-authenticated changes (POST/DELETE) from another origin, or without an Origin: 403 ORIGIN_REFUSED; the same
 *   requests from the studio's own origin, and scripts with `Authorization: Bearer`, still work;
 * - the cookie is Secure when the configured public URL is https.
 */
import http from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { KEY_COOKIE } from '../../server/http/api.js';
import { OTHER_API_KEY, startTestServer, TEST_API_KEY, type TestServer } from '../helpers/server.js';

let ts: TestServer | null = null;
afterEach(async () => {
  await ts?.stop();
  ts = null;
});

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One raw HTTP request (no fetch: it would add or refuse the Sec-Fetch / Origin headers a browser sends). */
function raw(url: string, method: string, headers: Record<string, string> = {}, body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** What Chromium sends for an address typed in (or a link the server printed, opened from a terminal). */
const typedIn = { 'sec-fetch-site': 'none', 'sec-fetch-mode': 'navigate', 'sec-fetch-dest': 'document' };
/** What Chromium sends when another site navigates the user here (a link, window.open, a redirect). */
const crossSite = { 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'navigate', 'sec-fetch-dest': 'document' };

const cookieOf = (r: Reply): string | undefined =>
  (r.headers['set-cookie'] ?? []).find((c) => c.startsWith(`${KEY_COOKIE}=`));
const signedIn = (key: string): Record<string, string> => ({ cookie: `${KEY_COOKIE}=${encodeURIComponent(key)}` });
const codeOf = (r: Reply): string => (JSON.parse(r.body) as { code: string }).code;

describe('studio sign-in: login CSRF and key guessing', () => {
  it("a cross-site navigation to /?key=ATTACKER does not replace the user's cookie: it asks to confirm", async () => {
    ts = await startTestServer({ avatar: { engine: 'portrait' } });
    const link = `${ts.url}/?key=${encodeURIComponent(OTHER_API_KEY)}&room=r1`;
    const senders: Record<string, string>[] = [
      crossSite,
      { 'sec-fetch-site': 'same-site', 'sec-fetch-mode': 'navigate' },
      {},
    ];
    for (const headers of senders) {
      const r = await raw(link, 'GET', { ...headers, ...signedIn(TEST_API_KEY) });
      expect(cookieOf(r), JSON.stringify(headers)).toBeUndefined();
      expect(r.status).toBe(200);
      expect(r.headers['content-type']).toMatch(/^text\/html/);
      // A form that posts to /signin, which the user must press; the page cannot be framed (no clickjacking).
      expect(r.body).toMatch(/<form method="post" action="\/signin">/);
      expect(r.headers['x-frame-options']).toBe('DENY');
      expect(r.headers['content-security-policy']).toContain("frame-ancestors 'none'");
      // The key leaves with no Referer to other sites; the form's own POST keeps its Origin (no-referrer sends null).
      expect(r.headers['referrer-policy']).toBe('same-origin');
    }
    // An iframe or a sub-resource, even from the same origin, is no top-level navigation either.
    const framed = await raw(link, 'GET', { ...typedIn, 'sec-fetch-dest': 'iframe' });
    expect(cookieOf(framed)).toBeUndefined();
  });

  it('a navigation the user started (typed in, or from the studio itself) still signs in at once', async () => {
    ts = await startTestServer({ avatar: { engine: 'portrait' } });
    for (const site of ['none', 'same-origin']) {
      const r = await raw(`${ts.url}/?key=${encodeURIComponent(TEST_API_KEY)}&room=r1`, 'GET', {
        ...typedIn,
        'sec-fetch-site': site,
      });
      expect(r.status).toBe(303);
      expect(r.headers.location).toBe('/?room=r1');
      expect(cookieOf(r)).toMatch(/HttpOnly; SameSite=Strict; Path=\//);
      expect(cookieOf(r)).not.toContain('Secure'); // plain http
    }
  });

  it('only a same-origin POST from the confirmation page sets the cookie; a cross-site POST is refused', async () => {
    ts = await startTestServer({ avatar: { engine: 'portrait' } });
    const form = `key=${encodeURIComponent(OTHER_API_KEY)}&next=${encodeURIComponent('room=r1&token=t')}`;
    const formType = { 'content-type': 'application/x-www-form-urlencoded' };
    // An attacker's auto-submitting form, or a request with no Origin at all.
    const senders: Record<string, string>[] = [
      { origin: 'http://evil.example', 'sec-fetch-site': 'cross-site' },
      { origin: 'null' },
      { 'sec-fetch-site': 'same-site' },
      {},
    ];
    for (const headers of senders) {
      const r = await raw(`${ts.url}/signin`, 'POST', { ...formType, ...headers }, form);
      expect(r.status, JSON.stringify(headers)).toBe(403);
      expect(codeOf(r)).toBe('ORIGIN_REFUSED');
      expect(cookieOf(r)).toBeUndefined();
    }
    const ok = await raw(
      `${ts.url}/signin`,
      'POST',
      { ...formType, origin: ts.url, 'sec-fetch-site': 'same-origin' },
      form,
    );
    expect(ok.status).toBe(303);
    expect(ok.headers.location).toBe('/?room=r1&token=t');
    expect(cookieOf(ok)).toContain(`${KEY_COOKIE}=${encodeURIComponent(OTHER_API_KEY)}`);
    // `next` is a query string, never a place: it cannot send the user elsewhere.
    const away = await raw(
      `${ts.url}/signin`,
      'POST',
      { ...formType, origin: ts.url },
      `key=${encodeURIComponent(TEST_API_KEY)}&next=${encodeURIComponent('//evil.example/x')}`,
    );
    expect(away.status).toBe(303);
    expect(away.headers.location).toMatch(/^\/\?/);
  });

  it('guessing keys through the address is rate limited per address (429 with Retry-After)', async () => {
    ts = await startTestServer({ avatar: { engine: 'portrait' }, auth: { signInPerMinute: 5 } });
    const statuses: number[] = [];
    let last: Reply | null = null;
    for (let i = 0; i < 8; i++) {
      last = await raw(`${ts.url}/?key=guess-${i}-0123456789abcdef`, 'GET', typedIn);
      statuses.push(last.status);
    }
    expect(statuses.slice(0, 5)).toEqual([303, 303, 303, 303, 303]);
    expect(statuses.slice(5)).toEqual([429, 429, 429]);
    expect(codeOf(last!)).toBe('TOO_MANY_REQUESTS');
    expect(Number(last!.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    // The right key is refused too while the bucket is empty (no oracle), and so is the POST.
    const right = await raw(`${ts.url}/?key=${encodeURIComponent(TEST_API_KEY)}`, 'GET', typedIn);
    expect(right.status).toBe(429);
    expect(cookieOf(right)).toBeUndefined();
    const post = await raw(
      `${ts.url}/signin`,
      'POST',
      { 'content-type': 'application/x-www-form-urlencoded', origin: ts.url },
      `key=${encodeURIComponent(TEST_API_KEY)}`,
    );
    expect(post.status).toBe(429);
    // The studio page without a key is not limited by the sign-in bucket.
    expect((await raw(`${ts.url}/`, 'GET', typedIn)).status).toBe(200);
  });

  it('the cookie is Secure when the configured public URL is https', async () => {
    ts = await startTestServer({ avatar: { engine: 'portrait' }, publicUrl: 'https://avatar.example' });
    const r = await raw(`${ts.url}/?key=${encodeURIComponent(TEST_API_KEY)}`, 'GET', typedIn);
    expect(r.status).toBe(303);
    expect(cookieOf(r)).toMatch(/; Secure$/);
  });
});

describe('cookie-authenticated changes need the studio origin', () => {
  it('a cross-origin or origin-less POST/DELETE with the cookie is 403 ORIGIN_REFUSED; same-origin and Bearer work', async () => {
    ts = await startTestServer({ avatar: { engine: 'portrait' }, publicUrl: 'https://avatar.example' });
    const url = ts.url;
    const json = { 'content-type': 'application/json' };
    const cookie = signedIn(TEST_API_KEY);
    const attacks: [string, string, Record<string, string>][] = [
      ['POST', '/api/rooms', { origin: 'http://evil.example', 'sec-fetch-site': 'cross-site' }],
      // Another port on the same host is same-site (the SameSite cookie goes along) but not same-origin.
      ['POST', '/api/rooms', { origin: 'http://127.0.0.1:1', 'sec-fetch-site': 'same-site' }],
      ['POST', '/api/rooms', { origin: 'null' }],
      ['POST', '/api/rooms', {}],
      ['DELETE', '/api/portraits/p_0123456789abcdef', { origin: 'http://evil.example' }],
      ['DELETE', '/api/rooms/some-room', { origin: 'http://evil.example' }],
      ['POST', '/api/rooms/some-room/revoke', { 'sec-fetch-site': 'cross-site' }],
    ];
    for (const [method, p, headers] of attacks) {
      const r = await raw(`${url}${p}`, method, { ...json, ...cookie, ...headers }, p === '/api/rooms' ? '{}' : '');
      expect(r.status, `${method} ${p} ${JSON.stringify(headers)}`).toBe(403);
      expect(codeOf(r)).toBe('ORIGIN_REFUSED');
    }
    expect(ts.server.rooms.size).toBe(0);

    // The studio's own fetches: Origin is the address the page was opened at, or the configured public URL.
    const own = await raw(`${url}/api/rooms`, 'POST', { ...json, ...cookie, origin: url }, '{}');
    expect(own.status).toBe(201);
    const pub = await raw(`${url}/api/rooms`, 'POST', { ...json, ...cookie, origin: 'https://avatar.example' }, '{}');
    expect(pub.status).toBe(201);
    // No Origin but Sec-Fetch-Site same-origin (a browser that leaves Origin out of same-origin requests).
    const sameSite = await raw(
      `${url}/api/rooms`,
      'POST',
      { ...json, ...cookie, 'sec-fetch-site': 'same-origin' },
      '{}',
    );
    expect(sameSite.status).toBe(201);
    const { roomId } = JSON.parse(own.body) as { roomId: string };
    const del = await raw(`${url}/api/rooms/${roomId}`, 'DELETE', { ...cookie, origin: url });
    expect(del.status).toBe(204);
    // Reads with the cookie need no Origin (the browser's same-origin policy keeps their answers from other sites).
    expect((await raw(`${url}/api/portraits`, 'GET', cookie)).status).toBe(200);
    // Scripts authenticate with a header, which no other site can make a browser send: no Origin needed.
    const bearer = await raw(
      `${url}/api/rooms`,
      'POST',
      { ...json, authorization: `Bearer ${TEST_API_KEY}`, origin: 'http://evil.example' },
      '{}',
    );
    expect(bearer.status).toBe(201);
  });
});
