import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { drivingClip, portraitFile } from '../helpers/media.js';
import { waitFor } from '../helpers/wait.js';
import { ffprobeStreams, runCli, startCli } from './cliRunner.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'avatar-render-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const clip = drivingClip('man_mouth_wide_open.mp4'); // 480x480, 30 fps, AAC audio
const portrait = portraitFile('real_woman_dark_hair.png');

describe('avatar render (subprocess)', () => {
  it('writes a playable mp4 with the right frame count, size and the clip audio', async () => {
    const out = path.join(dir, 'out.mp4');
    const r = await runCli([
      'render',
      '--portrait',
      portrait,
      '--driving',
      clip,
      '--out',
      out,
      '--engine',
      'portrait',
      '--max-frames',
      '30',
      '--size',
      '256',
    ]);
    expect(r.stderr).toContain('30/30 frames');
    expect(r.code, r.stderr).toBe(0);
    const streams = ffprobeStreams(out);
    const video = streams.find((s) => s.codec_type === 'video');
    const audio = streams.find((s) => s.codec_type === 'audio');
    expect(video?.codec_name).toBe('h264');
    expect(Number(video?.nb_read_frames)).toBe(30);
    expect([video?.width, video?.height]).toEqual([256, 256]);
    expect(audio?.codec_name).toBe('aac');
    // Only the final file and its provenance manifest: the temporary name was renamed.
    expect((await readdir(dir)).sort()).toEqual(['out.mp4', 'out.mp4.provenance.json']);
  });

  it(
    'the default engine animates a real portrait into a playable mp4 with the clip audio',
    { timeout: 180_000 },
    async () => {
      const out = path.join(dir, 'default.mp4');
      const r = await runCli([
        'render',
        '--portrait',
        portrait,
        '--driving',
        clip,
        '--out',
        out,
        '--engine',
        'default',
        '--start-frame',
        '55',
        '--max-frames',
        '20',
        '--size',
        '256',
      ]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain('20/20 frames');
      expect(r.stderr).toContain('engine default');
      const streams = ffprobeStreams(out);
      const video = streams.find((s) => s.codec_type === 'video');
      expect(Number(video?.nb_read_frames)).toBe(20);
      expect(video?.width).toBe(256);
      expect(streams.some((s) => s.codec_type === 'audio')).toBe(true);
    },
  );

  it(
    'the default engine refuses a portrait without a face, naming the file, and writes nothing',
    { timeout: 120_000 },
    async () => {
      const out = path.join(dir, 'dog.mp4');
      const dog = portraitFile('animal_shiba_dog.png');
      const r = await runCli([
        'render',
        '--portrait',
        dog,
        '--driving',
        clip,
        '--out',
        out,
        '--engine',
        'default',
        '--max-frames',
        '5',
      ]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`[NO_FACE] no face found in the portrait ${dog}`);
      expect(await readdir(dir)).toEqual([]);
    },
  );

  it('writes no audio stream for a clip without audio, and says so', async () => {
    const out = path.join(dir, 'silent.mp4');
    const r = await runCli([
      'render',
      '--portrait',
      portrait,
      '--driving',
      drivingClip('man_dreadlocks_talking_smile.mp4'),
      '--out',
      out,
      '--engine',
      'portrait',
      '--max-frames',
      '12',
      '--size',
      '128',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('audio none');
    const streams = ffprobeStreams(out);
    expect(streams.map((s) => s.codec_type)).toEqual(['video']);
    expect(Number(streams[0]!.nb_read_frames)).toBe(12);
  });

  it('gives clear errors for bad inputs and leaves no output behind', async () => {
    const out = path.join(dir, 'x.mp4');
    const missingPortrait = await runCli([
      'render',
      '--portrait',
      path.join(dir, 'nope.jpg'),
      '--driving',
      clip,
      '--out',
      out,
    ]);
    expect(missingPortrait.code).toBe(1);
    expect(missingPortrait.stderr).toMatch(/\[NOT_FOUND\] portrait not found: .*nope\.jpg/);

    const missingClip = await runCli([
      'render',
      '--portrait',
      portrait,
      '--driving',
      path.join(dir, 'nope.mp4'),
      '--out',
      out,
    ]);
    expect(missingClip.code).toBe(1);
    expect(missingClip.stderr).toMatch(/driving clip not found/);

    // An image is not a video: no video stream.
    const notVideo = await runCli(['render', '--portrait', portrait, '--driving', portrait, '--out', out]);
    expect(notVideo.code).toBe(1);
    expect(notVideo.stderr).toMatch(/\[UNSUPPORTED_MEDIA_TYPE\] not a video file/);

    const garbage = path.join(dir, 'garbage.mp4');
    await writeFile(garbage, 'this is not a video');
    const notMedia = await runCli(['render', '--portrait', portrait, '--driving', garbage, '--out', out]);
    expect(notMedia.code).toBe(1);
    expect(notMedia.stderr).toMatch(/UNSUPPORTED_MEDIA_TYPE/);

    const badPortrait = await runCli([
      'render',
      '--portrait',
      garbage,
      '--driving',
      clip,
      '--out',
      out,
      '--engine',
      'portrait',
    ]);
    expect(badPortrait.code).toBe(1);
    expect(badPortrait.stderr).toMatch(/portrait is not a decodable image/);

    const noOutDir = await runCli([
      'render',
      '--portrait',
      portrait,
      '--driving',
      clip,
      '--out',
      path.join(dir, 'no', 'such', 'x.mp4'),
    ]);
    expect(noOutDir.code).toBe(1);
    expect(noOutDir.stderr).toMatch(/folder for the output video does not exist/);

    const usage = await runCli(['render', '--portrait', portrait, '--driving', clip]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('--out is required');
    expect(usage.stderr).toContain('usage: avatar render');

    const unknownEngine = await runCli([
      'render',
      '--portrait',
      portrait,
      '--driving',
      clip,
      '--out',
      out,
      '--engine',
      'nope',
    ]);
    expect(unknownEngine.code).toBe(2);
    expect(unknownEngine.stderr).toMatch(/unknown engine "nope"/);

    const badFrames = await runCli([
      'render',
      '--portrait',
      portrait,
      '--driving',
      clip,
      '--out',
      out,
      '--max-frames',
      '0',
    ]);
    expect(badFrames.code).toBe(2);
    expect(badFrames.stderr).toMatch(/--max-frames must be a positive integer/);

    expect(await readdir(dir)).toEqual(['garbage.mp4']);
  });

  it('an interrupted render leaves neither the output nor its temporary file', async () => {
    const out = path.join(dir, 'long.mp4');
    const r = startCli([
      'render',
      '--portrait',
      portrait,
      '--driving',
      drivingClip('woman_tongue_crossed_eyes_grimace.mp4'),
      '--out',
      out,
      '--engine',
      'portrait',
      '--size',
      '128',
    ]);
    // The temporary file exists while rendering; interrupt once frames are flowing.
    await waitFor(
      async () => r.stderr().includes('frames') && (await readdir(dir)).length > 0,
      30_000,
      'render progress',
    );
    expect((await readdir(dir))[0]).toMatch(/^\.long\.partial-\d+\.mp4$/);
    r.proc.kill('SIGINT');
    const code = await r.done;
    expect(code).toBe(130);
    expect(r.stderr()).toContain('interrupted; no output written');
    expect(await readdir(dir)).toEqual([]);
  });
});
