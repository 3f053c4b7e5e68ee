/**
 * The studio sign-in in real Chromium (issue 20, item 4): an attacker's page on another site (http://localhost:PORT,
 * while the server is http://127.0.0.1:PORT: another site for the browser) tries to replace the signed-in user's
 * cookie with the attacker's key, by a link to /?key=ATTACKER and by an auto-submitted form to /signin.
 * - the link shows the confirmation page and the user's cookie stays; pressing "Sign in" there does sign in;
 * - the cross-site form POST is refused (403 ORIGIN_REFUSED) and the cookie stays;
 * - the studio page, opened from the printed link, still signs in and creates a room (its fetches are same-origin).
 */
import { existsSync } from 'node:fs';
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEY_COOKIE } from '../../server/http/api.js';
import { buildClient, chromiumPath, ChromiumBrowser } from '../helpers/chromium.js';
import { OTHER_API_KEY, startTestServer, TEST_API_KEY, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

const haveChromium = existsSync(chromiumPath);
if (!haveChromium) process.stdout.write(`sign-in Chromium tests skipped: ${chromiumPath} is missing\n`);

describe.runIf(haveChromium)('studio sign-in in Chromium: login CSRF from another site', () => {
  let ts: TestServer | null = null;
  let browser: ChromiumBrowser | null = null;
  let attacker: http.Server | null = null;
  let attackerUrl = '';

  beforeAll(async () => {
    await buildClient();
    ts = await startTestServer({ avatar: { engine: 'portrait' } });
    const target = ts.url;
    // The attacker's site: a link to the studio with the attacker's key, and a form that posts it to /signin.
    attacker = http.createServer((req, res) => {
      res.setHeader('content-type', 'text/html');
      const key = encodeURIComponent(OTHER_API_KEY);
      if (req.url === '/form')
        res.end(
          `<form id="f" method="post" action="${target}/signin"><input name="key" value="${OTHER_API_KEY}"></form>` +
            `<script>document.getElementById('f').submit()</script>`,
        );
      else res.end(`<a id="go" href="${target}/?key=${key}">free avatars</a>`);
    });
    await new Promise<void>((r) => attacker!.listen(0, '127.0.0.1', r));
    const port = (attacker.address() as { port: number }).port;
    attackerUrl = `http://localhost:${port}`;
    browser = await ChromiumBrowser.launch();
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await new Promise((r) => attacker?.close(r));
    await ts?.stop();
  });

  const keyCookie = async (): Promise<string | undefined> =>
    (await browser!.context.cookies(ts!.url)).find((c) => c.name === KEY_COOKIE)?.value;

  it('the printed link signs in; links and forms from another site do not replace the cookie', async () => {
    const page = browser!.page;
    // The user opens the link the server printed: signed in, the studio creates a room (same-origin POST).
    await page.goto(`${ts!.url}/?key=${encodeURIComponent(TEST_API_KEY)}`);
    await waitFor(() => new URL(page.url()).searchParams.get('room'), 15_000, 'studio created a room');
    expect(await keyCookie()).toBe(encodeURIComponent(TEST_API_KEY));
    expect(ts!.server.rooms.size).toBe(1);

    // The attacker's link: the confirmation page, the cookie unchanged.
    await page.goto(attackerUrl);
    await page.locator('#go').click();
    await page.locator('#confirm').waitFor({ timeout: 10_000 });
    expect(new URL(page.url()).pathname).toBe('/');
    expect(await keyCookie()).toBe(encodeURIComponent(TEST_API_KEY));

    // The attacker's auto-submitted form: refused, the cookie unchanged.
    const refused = page.waitForResponse((r) => r.url() === `${ts!.url}/signin`);
    await page.goto(`${attackerUrl}/form`);
    const r = await refused;
    expect(r.status()).toBe(403);
    expect(((await r.json()) as { code: string }).code).toBe('ORIGIN_REFUSED');
    expect(await keyCookie()).toBe(encodeURIComponent(TEST_API_KEY));

    // The user presses "Sign in" on the confirmation page: that is their choice, and it works.
    await page.goto(attackerUrl);
    await page.locator('#go').click();
    await page.locator('#confirm').click();
    await waitFor(async () => (await keyCookie()) === encodeURIComponent(OTHER_API_KEY), 10_000, 'signed in');
  }, 90_000);
});
