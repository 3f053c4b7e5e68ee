/**
 * With the default engine the server refuses, at upload, a portrait in which the face detector finds no face
 * (422 NO_FACE, nothing stored), accepts real portraits (photo, painting, cartoon), and keeps serving meanwhile.
 */
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { portraitFile } from '../../scripts/testData.js';
import { startTestServer, type TestServer, apiFetch } from '../helpers/server.js';

let ts: TestServer;
beforeEach(async () => {
  ts = await startTestServer({ avatar: { engine: 'default' } });
});
afterEach(async () => {
  await ts.stop();
});

async function upload(data: Buffer, name: string): Promise<{ status: number; body: { code?: string; id?: string } }> {
  const form = new FormData();
  form.append('file', new Blob([new Uint8Array(data)]), name);
  form.append('consent', 'true');
  const res = await apiFetch(`${ts.url}/api/portraits`, { method: 'POST', body: form });
  return { status: res.status, body: (await res.json()) as { code?: string; id?: string } };
}

const portrait = (name: string): Promise<Buffer> => readFile(portraitFile(name));

describe('face check at upload (default engine)', () => {
  it('refuses an image without a face with NO_FACE and stores nothing', async () => {
    const grey = await sharp({
      create: { width: 640, height: 480, channels: 3, background: { r: 128, g: 128, b: 128 } },
    })
      .png()
      .toBuffer();
    const up = await upload(grey, 'grey.png');
    expect([up.status, up.body.code]).toEqual([422, 'NO_FACE']);
    const dog = await upload(await portrait('animal_shiba_dog.png'), 'dog.png');
    expect([dog.status, dog.body.code]).toEqual([422, 'NO_FACE']);
    const files = (await readdir(path.join(ts.dataDir, 'portraits'))).filter((f) => !f.startsWith('.'));
    expect(files).toEqual([]);
    // The server still serves: health answers while and after the checks ran.
    const health = await fetch(`${ts.url}/healthz`);
    expect(health.status).toBe(200);
  });

  it('accepts a photo, a painting and a cartoon', async () => {
    for (const name of ['real_older_man_smile.jpg', 'painting_mona_lisa.jpg', 'cartoon_3d_boy.jpg']) {
      const up = await upload(await portrait(name), name);
      expect([name, up.status]).toEqual([name, 201]);
      expect(up.body.id).toMatch(/^[a-f0-9]{32}$/);
    }
  });

  it('hostile uploads cost a bounded analysis: a crowd of faces is accepted, a 24 Mpx picture without one is refused', async () => {
    // 25 faces in one picture: the check stops at the first face (the analyzer is capped, see the mesh tests).
    const face = await sharp(await portrait('real_japanese_woman.png'))
      .resize(300, 300)
      .png()
      .toBuffer();
    const crowd = await sharp({
      create: { width: 1500, height: 1500, channels: 3, background: { r: 200, g: 200, b: 200 } },
    })
      .composite(
        Array.from({ length: 25 }, (_, i) => ({ input: face, left: (i % 5) * 300, top: Math.floor(i / 5) * 300 })),
      )
      .png()
      .toBuffer();
    const up = await upload(crowd, 'crowd.png');
    expect(up.status).toBe(201);
    // 6000 x 4000 of noise: analysed at 1024 px on its long side like any portrait, refused with NO_FACE.
    const noise = Buffer.alloc(6000 * 4000 * 3);
    for (let i = 0; i < noise.length; i += 97) noise[i] = (i * 31) & 255;
    const big = await sharp(noise, { raw: { width: 6000, height: 4000, channels: 3 } })
      .jpeg({ quality: 60 })
      .toBuffer();
    const refused = await upload(big, 'big.jpg');
    expect([refused.status, refused.body.code]).toEqual([422, 'NO_FACE']);
    expect((await fetch(`${ts.url}/healthz`)).status).toBe(200);
  });
});
