/**
 * The same clip rendered both ways by the default engine: the video path (render(): the engine tracks the driving
 * frames itself) and private mode's path (the face tracked outside with the same tracker, sent through the wire format
 * and rendered with renderTrack()). The only difference is the wire's quantisation, so the outputs must agree within
 * noise while the avatar clearly moves.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DefaultEngine, createDefaultVision } from '../../server/avatar/engines/default/index.js';
import { projectRoot } from '../../server/config.js';
import { createLogger } from '../../server/logger.js';
import { createI420, loadImageRgb } from '../../server/util/image.js';
import {
  createDecodedExpression,
  decodeExpression,
  encodeExpression,
  FACE_BYTES,
} from '../../server/types/expressionWire.js';
import { portraitFile } from '../../scripts/testData.js';
import { trackClip, type TrackedClip } from '../helpers/trackedClip.js';
import { lumaMad } from '../media/helpers.js';

let engine: DefaultEngine;
let clip: TrackedClip;

beforeAll(async () => {
  clip = await trackClip('man_mouth_wide_open.mp4', 90);
  engine = await DefaultEngine.create({
    modelPack: path.join(projectRoot, 'models', 'default'),
    executionProvider: 'cpu',
    intraOpThreads: 1,
    outputSize: 256,
    steps: 0,
    refinerPack: null,
    vision: await createDefaultVision('mesh'),
    log: createLogger('test.privatePath'),
  });
}, 180_000);

afterAll(() => engine?.close());

describe('private path vs video path (default engine)', () => {
  it('renders the same clip to the same avatar within the quantisation noise', async () => {
    const portrait = await loadImageRgb(portraitFile('real_japanese_woman.png'));
    const prepared = await engine.prepare(portrait);
    const out = createI420(prepared.width, prepared.height);
    const n = prepared.width * prepared.height;

    const video: Uint8Array[] = [];
    const videoFaces: boolean[] = [];
    for (let i = 0; i < clip.frames.length; i++) {
      const s = engine.render(clip.frames[i]!, out, clip.times[i]!);
      video.push(out.data.slice(0, n));
      videoFaces.push(s.face);
    }

    // A fresh performer on the same portrait (prepared again from its cache), driven through the wire format.
    engine.reset();
    await engine.prepare(portrait, prepared.cache);
    const decoded = createDecodedExpression();
    const buf = new Uint8Array(FACE_BYTES);
    const priv: Uint8Array[] = [];
    const privFaces: boolean[] = [];
    for (let i = 0; i < clip.tracks.length; i++) {
      const msg = encodeExpression(
        { seq: i, captureMs: 1 + clip.times[i]!, width: clip.width, height: clip.height, track: clip.tracks[i]! },
        buf,
      );
      expect(decodeExpression(msg, decoded)).toBeNull();
      const s = engine.renderTrack(
        { width: decoded.width, height: decoded.height, track: decoded.track },
        out,
        clip.times[i]!,
      );
      priv.push(out.data.slice(0, n));
      privFaces.push(s.face);
    }

    expect(privFaces).toEqual(videoFaces);
    expect(videoFaces.filter(Boolean).length).toBeGreaterThan(clip.frames.length * 0.9);
    // The avatar moved (the mouth opens wide in this clip)...
    const moved = Math.max(...video.map((v) => lumaMad(video[0]!, v, n)));
    expect(moved).toBeGreaterThan(1);
    // ...and both paths agree far more closely than the motion: within the wire's quantisation noise.
    const diffs = video.map((v, i) => lumaMad(v, priv[i]!, n)).sort((a, b) => a - b);
    const mean = diffs.reduce((a, b) => a + b, 0) / diffs.length;
    const p95 = diffs[Math.floor(0.95 * (diffs.length - 1))]!;
    expect(mean).toBeLessThan(0.1 * moved);
    expect(p95).toBeLessThan(0.2 * moved);
    expect(mean).toBeLessThan(0.1);
  }, 300_000);
});
