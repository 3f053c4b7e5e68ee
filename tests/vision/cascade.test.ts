import { readFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  CASCADE_PATHS,
  CascadeClassifier,
  finishDetections,
  groupRectangles,
  parseCascadeXml,
  partition,
  rint,
  type CvRect,
} from '../../server/vision/cascade.js';
import { readPgm, referenceMissing, refDir } from './helpers.js';

interface CascadeRef {
  faces: CvRect[];
  neighbors: number[];
  raw_count: number;
  raw_candidates: CvRect[];
}
interface RefFrame {
  image: string;
  width: number;
  height: number;
  haar_frontalface_default: CascadeRef;
  lbp_frontalface_improved: CascadeRef;
}
interface CascadeReference {
  params: { scaleFactor: number; minNeighbors: number; minSize: [number, number] };
  frames: RefFrame[];
}
const noRef = referenceMissing('the OpenCV parity tests of cascade.test.ts');
const ref: CascadeReference = noRef
  ? { params: { scaleFactor: 0, minNeighbors: 0, minSize: [0, 0] }, frames: [] }
  : (JSON.parse(readFileSync(path.join(refDir, 'opencv_detections.json'), 'utf8')) as CascadeReference);

describe('cascade XML', () => {
  it('parses both Debian cascades with the documented sizes', async () => {
    const haar = await CascadeClassifier.load(CASCADE_PATHS.haar);
    expect(haar.model.type).toBe('HAAR');
    expect([haar.model.width, haar.model.height]).toEqual([24, 24]);
    expect(haar.model.stageCount.length).toBe(25);
    expect(haar.model.stumpFeature.length).toBe(2913);
    expect(haar.model.featureCount).toBe(2913);
    expect(Array.from(haar.model.stageCount.slice(0, 3))).toEqual([9, 16, 27]);
    const lbp = await CascadeClassifier.load(CASCADE_PATHS.lbp);
    expect(lbp.model.type).toBe('LBP');
    expect([lbp.model.width, lbp.model.height]).toEqual([45, 45]);
    expect(lbp.model.stageCount.length).toBe(19);
    expect(lbp.model.stumpFeature.length).toBe(149);
    expect(lbp.model.featureCount).toBe(142);
  });

  it('stores stage thresholds minus THRESHOLD_EPS in float32', async () => {
    const haar = await CascadeClassifier.load(CASCADE_PATHS.haar);
    expect(haar.model.stageThreshold[0]).toBe(Math.fround(Math.fround(-5.0425500869750977) - Math.fround(1e-5)));
  });

  it('rejects what it cannot run, with a clear error', async () => {
    expect(() => parseCascadeXml('<opencv_storage></opencv_storage>')).toThrow(/missing <cascade>/);
    const alt2 = '/usr/share/opencv4/haarcascades/haarcascade_frontalface_alt2.xml';
    expect(() => parseCascadeXml(readFileSync(alt2, 'utf8'))).toThrow(/only stump cascades/);
    await expect(CascadeClassifier.load('/nonexistent/cascade.xml')).rejects.toThrow(/not readable/);
  });

  it('rint rounds half to even like cvRound', () => {
    expect([rint(0.5), rint(1.5), rint(2.5), rint(-0.5), rint(-1.5), rint(2.4), rint(2.6)]).toEqual([
      0, 2, 2, -0, -2, 2, 3,
    ]);
  });

  it('partition labels classes in order of their first member', () => {
    const r = partition([1, 10, 2, 11, 30], (a, b) => Math.abs(a - b) <= 1);
    expect(Array.from(r.labels)).toEqual([0, 1, 0, 1, 2]);
    expect(r.count).toBe(3);
  });

  it('groupRectangles averages classes and drops small ones', () => {
    const rects: CvRect[] = [
      [10, 10, 20, 20],
      [11, 10, 20, 20],
      [10, 11, 21, 21],
      [100, 100, 20, 20],
    ];
    const g = groupRectangles(rects, 1, 0.2);
    expect(g.rects).toEqual([[10, 10, 20, 20]]);
    expect(g.neighbors).toEqual([3]);
  });
});

// OpenCV 4.6 parity on the 24 reference frames (FORMAT.md §4.3, §8.5): raw candidates in order, grouped faces and
// neighbor counts, for both cascades.
describe.skipIf(noRef).each([
  ['haar_frontalface_default', CASCADE_PATHS.haar],
  ['lbp_frontalface_improved', CASCADE_PATHS.lbp],
] as const)('detectMultiScale parity with OpenCV: %s', (name, file) => {
  let cascade: CascadeClassifier;
  beforeAll(async () => {
    cascade = await CascadeClassifier.load(file);
  });
  it.each(ref.frames.map((f) => [path.basename(f.image), f] as const))('%s', (_n, frame) => {
    const img = readPgm(path.join(refDir, frame.image));
    const p = ref.params;
    const raw = cascade.candidates(img, { scaleFactor: p.scaleFactor, minSize: p.minSize[0] });
    const expected = frame[name];
    const rawOut = finishDetections(raw, 0, img.width, img.height);
    expect(rawOut.rects.length).toBe(expected.raw_count);
    expect(rawOut.rects).toEqual(expected.raw_candidates);
    const grouped = finishDetections(raw, p.minNeighbors, img.width, img.height);
    expect(grouped.rects).toEqual(expected.faces);
    expect(grouped.neighbors).toEqual(expected.neighbors);
  });
});
