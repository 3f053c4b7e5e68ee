import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { probeVideo } from '../../server/util/video.js';
import { mediaDir, repoRoot, requireShared } from './helpers.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'vision-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Runs `node bin/avatar.mjs ...args` as a real subprocess. */
function avatar(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [path.join(repoRoot, 'bin', 'avatar.mjs'), ...args], {
      cwd: repoRoot,
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

interface FaceJson {
  box: number[];
  landmarks: number[][];
  pose: Record<string, number>;
  eyes: { left: number; right: number };
  mouth: number;
  gaze: { x: number; y: number };
  confidence: number;
}
interface TrackJson {
  input: string;
  width: number;
  height: number;
  fps: number | null;
  frames: { index: number; time_ms: number; faces: FaceJson[] }[];
}

function checkFace(f: FaceJson, w: number, h: number): void {
  expect(f.box).toHaveLength(4);
  expect(f.box[2]! - f.box[0]!).toBeGreaterThan(20);
  expect(f.landmarks).toHaveLength(68);
  for (const [x, y] of f.landmarks) {
    expect(x).toBeGreaterThan(-w);
    expect(y).toBeLessThan(2 * h);
  }
  expect(Object.keys(f.pose).sort()).toEqual(['pitch', 'roll', 'tx', 'ty', 'tz', 'yaw']);
  expect(f.pose.tz).toBeGreaterThan(0);
  expect(f.eyes.left).toBeGreaterThan(0);
  expect(f.mouth).toBeGreaterThanOrEqual(0);
  expect(Number.isFinite(f.gaze.x) && Number.isFinite(f.gaze.y)).toBe(true);
  expect(f.confidence).toBeGreaterThan(0);
  expect(f.confidence).toBeLessThanOrEqual(1);
}

describe('avatar track (subprocess)', () => {
  it('a portrait: JSON with one face and a PNG overlay', async () => {
    const input = requireShared(path.join(mediaDir, 'portraits', 'real_older_man_glasses.jpg'));
    const json = path.join(tmp, 'portrait.json');
    const overlay = path.join(tmp, 'portrait.png');
    const r = await avatar(['track', '--input', input, '--json', json, '--overlay', overlay]);
    expect(r.stderr).toContain('1 face(s)');
    expect(r.code).toBe(0);
    const out = JSON.parse(readFileSync(json, 'utf8')) as TrackJson;
    expect(out).toMatchObject({ input, width: 624, height: 624, fps: null });
    expect(out.frames).toHaveLength(1);
    expect(out.frames[0]!.faces).toHaveLength(1);
    checkFace(out.frames[0]!.faces[0]!, 624, 624);
    expect(readFileSync(overlay).subarray(1, 4).toString()).toBe('PNG');
  });

  it('a short clip: one entry per frame, faces in nearly all, an MP4 overlay with audio', async () => {
    const input = requireShared(path.join(mediaDir, 'driving', 'man_mouth_wide_open.mp4'));
    const json = path.join(tmp, 'clip.json');
    const overlay = path.join(tmp, 'clip.mp4');
    const r = await avatar(['track', '--input', input, '--json', json, '--overlay', overlay, '--max-frames', '40']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/frame \d+\/40/);
    const out = JSON.parse(readFileSync(json, 'utf8')) as TrackJson;
    expect(out).toMatchObject({ width: 480, height: 480, fps: 30 });
    expect(out.frames).toHaveLength(40);
    expect(out.frames.map((f) => f.index)).toEqual([...Array(40).keys()]);
    expect(out.frames[10]!.time_ms).toBeCloseTo(333.33, 1);
    const withFace = out.frames.filter((f) => f.faces.length === 1);
    expect(withFace.length).toBeGreaterThanOrEqual(38);
    for (const f of withFace) checkFace(f.faces[0]!, 480, 480);
    expect(statSync(overlay).size).toBeGreaterThan(10_000);
    expect(await probeVideo(overlay)).toMatchObject({ width: 480, height: 480, frameCount: 40, hasAudio: true });
  });

  it('clear errors: missing input, unsupported input, bad arguments', async () => {
    const missing = await avatar(['track', '--input', path.join(tmp, 'nope.mp4'), '--json', path.join(tmp, 'x.json')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('[NOT_FOUND]');
    const junk = await avatar([
      'track',
      '--input',
      path.join(repoRoot, 'package.json'),
      '--json',
      path.join(tmp, 'x.json'),
    ]);
    expect(junk.code).toBe(1);
    expect(junk.stderr).toContain('[UNSUPPORTED_MEDIA_TYPE]');
    const usage = await avatar(['track', '--json', path.join(tmp, 'x.json')]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('missing --input');
    const badOverlay = await avatar(['track', '--input', 'a.png', '--json', 'x.json', '--overlay', 'x.gif']);
    expect(badOverlay.code).toBe(2);
  });
});
