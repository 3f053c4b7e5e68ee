/**
 * Signed renders and verification, with the real CLI as a subprocess, the real ffmpeg and a real server:
 *  - `avatar render` writes OUT.mp4 and OUT.mp4.provenance.json, signed with a key it creates (mode 0600) in the
 *    data dir; `avatar verify OUT.mp4 --json R` says: watermark present in every 1-s window with the manifest's
 *    payload, signature valid, this server's key;
 *  - a changed video (one byte appended) fails the file hash; a changed claim fails the signature; the watermark
 *    survives VP8 at 500 kbps + a scale to 50 % (verify of the re-encoded file, no manifest);
 *  - an original (unmarked) clip has no watermark; bad input gets stable error codes;
 *  - POST /api/verify answers the same report for a frame (PNG) and for the clip with its manifest (multipart).
 */
import { spawn } from 'node:child_process';
import { appendFile, copyFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../../server/provenance/manifest.js';
import type { VerifyReport } from '../../server/provenance/verify.js';
import { drivingClip, portraitFile, repoRoot } from '../helpers/media.js';
import { isPortFree } from '../helpers/net.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

let dir: string;
let dataDir: string;
let video: string;

/** Runs `node bin/avatar.mjs ...args` with AVATAR_DATA_DIR set to this test's data folder. */
function cli(args: string[], data = dataDir): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [path.join(repoRoot, 'bin', 'avatar.mjs'), ...args], {
      cwd: repoRoot,
      env: { ...process.env, AVATAR_DATA_DIR: data, AVATAR_SIGNING_KEY: '' },
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

function ffmpeg(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn('ffmpeg', ['-v', 'error', '-nostdin', '-y', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    p.on('close', (code) => (code === 0 ? resolve() : reject(new Error(err))));
  });
}

async function verifyJson(args: string[]): Promise<VerifyReport> {
  const out = path.join(dir, `report-${Math.random().toString(36).slice(2)}.json`);
  const r = await cli(['verify', ...args, '--json', out]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(await readFile(out, 'utf8')) as VerifyReport;
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'avatar-verify-'));
  dataDir = path.join(dir, 'data');
  video = path.join(dir, 'out.mp4');
  const r = await cli([
    'render',
    '--portrait',
    portraitFile('real_woman_dark_hair.png'),
    '--driving',
    drivingClip('man_mouth_wide_open.mp4'),
    '--out',
    video,
    '--engine',
    'portrait',
    '--max-frames',
    '75',
    '--size',
    '384',
  ]);
  expect(r.code, r.stderr).toBe(0);
  expect(r.stderr).toContain('provenance: out.mp4.provenance.json (signed)');
}, 120_000);

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('signed renders and avatar verify', () => {
  it('render signs a sidecar manifest with a 0600 key; verify finds the watermark and a valid signature', async () => {
    const key = await stat(path.join(dataDir, 'provenance', 'ed25519.pem'));
    expect(key.mode & 0o777).toBe(0o600);
    const manifest = JSON.parse(await readFile(`${video}.provenance.json`, 'utf8')) as Manifest;
    expect(manifest.signature.alg).toBe('Ed25519');
    expect(manifest.claim.assertions['avatar.engine'].name).toBe('portrait');
    expect(manifest.claim.assertions['avatar.portrait'].file).toBe('real_woman_dark_hair.png');
    expect(manifest.claim.assertions['avatar.portrait'].sha256).toMatch(/^[0-9a-f]{64}$/);
    const payload = manifest.claim.assertions['c2pa.soft-binding']!.payload;

    const r = await verifyJson([video]);
    expect(r.watermark).toMatchObject({ present: true, payload, windows: 3, detected_windows: 3 });
    expect(r.signature).toMatchObject({
      valid: true,
      signature_valid: true,
      hash_matches: true,
      trusted_key: true,
      manifest_payload: payload,
      payload_matches: true,
    });
    const text = await cli(['verify', video]);
    expect(text.stdout).toContain(`watermark: PRESENT, payload ${payload}`);
    expect(text.stdout).toContain('signature: VALID');
  }, 60_000);

  it('a changed file fails the hash, a changed claim fails the signature', async () => {
    const changed = path.join(dir, 'changed.mp4');
    await copyFile(video, changed);
    await appendFile(changed, Buffer.from([0]));
    await copyFile(`${video}.provenance.json`, `${changed}.provenance.json`);
    const r1 = await verifyJson([changed]);
    expect(r1.signature).toMatchObject({ valid: false, signature_valid: true, hash_matches: false });
    expect(r1.watermark.present).toBe(true);

    const m = JSON.parse(await readFile(`${video}.provenance.json`, 'utf8')) as Manifest;
    m.claim.assertions['avatar.engine'].name = 'someone-else';
    const forged = path.join(dir, 'forged.json');
    await writeFile(forged, JSON.stringify(m));
    const r2 = await verifyJson([video, '--manifest', forged]);
    expect(r2.signature).toMatchObject({ valid: false, signature_valid: false, hash_matches: true });
  }, 60_000);

  it('the watermark survives VP8 at 500 kbps after a scale to 50 %; an original clip has none', async () => {
    const attacked = path.join(dir, 'attacked.webm');
    await ffmpeg(['-i', video, '-vf', 'scale=iw/2:ih/2', '-c:v', 'libvpx', '-b:v', '500k', '-an', attacked]);
    const m = JSON.parse(await readFile(`${video}.provenance.json`, 'utf8')) as Manifest;
    const r = await verifyJson([attacked]);
    expect(r.watermark).toMatchObject({ present: true, payload: m.claim.assertions['c2pa.soft-binding']!.payload });
    expect(r.watermark.detected_windows).toBe(r.watermark.windows);
    expect(r.signature).toBeNull();

    const original = await verifyJson([drivingClip('man_mouth_wide_open.mp4')]);
    expect(original.watermark).toMatchObject({ present: false, payload: null, detected_windows: 0 });
    expect(original.watermark.windows).toBeGreaterThan(5);
  }, 60_000);

  it('bad input: stable codes and exit codes', async () => {
    const junk = path.join(dir, 'junk.mp4');
    await writeFile(junk, 'not a video');
    const r1 = await cli(['verify', junk]);
    expect(r1.code).toBe(1);
    expect(r1.stderr).toContain('[UNSUPPORTED_MEDIA_TYPE]');
    const r2 = await cli(['verify', path.join(dir, 'missing.mp4')]);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toContain('[NOT_FOUND]');
    const r3 = await cli(['verify']);
    expect(r3.code).toBe(2);
    expect(r3.stderr).toContain('FILE is required');
    const bad = path.join(dir, 'bad.json');
    await writeFile(bad, '{"format":"something else"}');
    const r4 = await cli(['verify', video, '--manifest', bad]);
    expect(r4.code).toBe(1);
    expect(r4.stderr).toContain('[MANIFEST_INVALID]');
  }, 60_000);
});

describe('POST /api/verify', () => {
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer();
  });
  afterAll(async () => {
    await ts.stop();
    expect(await isPortFree(ts.port)).toBe(true);
  });

  it('answers the report for a frame and for a clip with its manifest; refuses bad bodies with codes', async () => {
    const png = path.join(dir, 'frame.png');
    await ffmpeg(['-ss', '1', '-i', video, '-frames:v', '1', png]);
    const m = JSON.parse(await readFile(`${video}.provenance.json`, 'utf8')) as Manifest;
    const payload = m.claim.assertions['c2pa.soft-binding']!.payload;

    const r1 = await fetch(`${ts.url}/api/verify`, {
      method: 'POST',
      headers: { 'content-type': 'image/png' },
      body: await readFile(png),
    });
    expect(r1.status).toBe(200);
    const j1 = (await r1.json()) as VerifyReport;
    expect(j1.watermark).toMatchObject({ present: true, payload, windows: 1, detected_windows: 1 });
    expect(j1.signature).toBeNull();
    // The same frame enlarged to 1536 px: shrunk to 512 px while decoding, the watermark still reads.
    const big = await sharp(png).resize({ width: 1536, kernel: 'nearest' }).png().toBuffer();
    const rBig = await fetch(`${ts.url}/api/verify`, {
      method: 'POST',
      headers: { 'content-type': 'image/png' },
      body: new Blob([new Uint8Array(big)]),
    });
    expect(rBig.status).toBe(200);
    expect(((await rBig.json()) as VerifyReport).watermark).toMatchObject({ present: true, payload });

    const form = new FormData();
    form.append('file', new Blob([new Uint8Array(await readFile(video))]), 'out.mp4');
    form.append(
      'manifest',
      new Blob([new Uint8Array(await readFile(`${video}.provenance.json`))]),
      'out.mp4.provenance.json',
    );
    const r2 = await fetch(`${ts.url}/api/verify`, { method: 'POST', body: form });
    expect(r2.status).toBe(200);
    const j2 = (await r2.json()) as VerifyReport;
    expect(j2.watermark).toMatchObject({ present: true, payload, detected_windows: 3 });
    // Signed by the CLI's key, not this server's (another data dir) nor a configured one: a correct signature by a key
    // this server does not trust reads untrusted, not valid.
    expect(j2.signature).toMatchObject({
      status: 'untrusted',
      valid: false,
      signature_valid: true,
      hash_matches: true,
      trusted_key: false,
      payload_matches: true,
    });
    // The server made its own key at start-up, mode 0600.
    expect((await stat(path.join(ts.dataDir, 'provenance', 'ed25519.pem'))).mode & 0o777).toBe(0o600);

    const r3 = await fetch(`${ts.url}/api/verify`, { method: 'POST', body: '' });
    expect(r3.status).toBe(400);
    expect(((await r3.json()) as { code: string }).code).toBe('BAD_REQUEST');
    const r4 = await fetch(`${ts.url}/api/verify`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: 'hello, this is not a picture',
    });
    expect(r4.status).toBe(415);
    expect(((await r4.json()) as { code: string }).code).toBe('UNSUPPORTED_MEDIA_TYPE');
    const r5 = await fetch(`${ts.url}/api/verify`, { method: 'GET' });
    expect(r5.status).toBe(405);
  }, 60_000);

  it('a render of a stored portrait (--portrait-id) names its id and consent record, signed with the server key', async () => {
    const form = new FormData();
    form.append('consent', 'true');
    form.append('file', new Blob([new Uint8Array(await readFile(portraitFile('painting_mona_lisa.jpg')))]), 'mona.jpg');
    const key = ts.config.auth.apiKeys[0]?.secret ?? ts.server.operatorKey;
    const up = await fetch(`${ts.url}/api/portraits`, {
      method: 'POST',
      body: form,
      headers: key ? { authorization: `Bearer ${key}` } : {},
    });
    expect(up.status).toBe(201);
    const { id } = (await up.json()) as { id: string };
    const out = path.join(dir, 'stored.mp4');
    const r = await cli(
      [
        'render',
        '--portrait-id',
        id,
        '--driving',
        drivingClip('man_mouth_wide_open.mp4'),
        '--out',
        out,
        '--engine',
        'portrait',
        '--max-frames',
        '10',
        '--size',
        '256',
      ],
      ts.dataDir,
    );
    expect(r.code, r.stderr).toBe(0);
    const m = JSON.parse(await readFile(`${out}.provenance.json`, 'utf8')) as Manifest;
    expect(m.claim.assertions['avatar.portrait']).toMatchObject({ id, consent: { given: true } });
    expect(m.claim.assertions['avatar.portrait'].consent!.at).toMatch(/^\d{4}-/);
    const form2 = new FormData();
    form2.append('file', new Blob([new Uint8Array(await readFile(out))]), 'stored.mp4');
    form2.append('manifest', new Blob([new Uint8Array(await readFile(`${out}.provenance.json`))]), 'm.json');
    const v = (await (await fetch(`${ts.url}/api/verify`, { method: 'POST', body: form2 })).json()) as VerifyReport;
    expect(v.signature).toMatchObject({ valid: true, trusted_key: true, portrait_id: id });
    const bad = await cli([
      'render',
      '--portrait-id',
      'nope',
      '--driving',
      drivingClip('man_mouth_wide_open.mp4'),
      '--out',
      out,
    ]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--portrait-id must be a portrait id');
  }, 60_000);
});
