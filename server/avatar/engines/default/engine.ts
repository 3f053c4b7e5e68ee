/**
 * DefaultEngine: the model-pack avatar engine of the live path (CPU by default, no download).
 *
 * prepare(portrait): finds the face (vision's analyzeImage), builds the crop, control points, masks and colours
 * (prepare.ts). render(driving, out): tracks the performer (vision's FaceTracker), updates the expression latent
 * (expression.ts), retargets it onto the portrait's control points, solves the small TPS system, rasterizes the
 * target eye/mouth masks, and runs the generator (models/tools/build_generator.py), which warps the crop straight
 * into the paste region, draws the mouth interior, pastes with the feathered mask and converts to I420, over the
 * portrait's static I420 background.
 *
 * Two ways to run the generator, same maths: on a GPU provider the whole graph (`generator`, GridSample inside); on
 * the CPU the pack's `fields` graph (TPS flow and mouth interior at node resolution) and a fused JS pass for the
 * output-resolution part (warp.ts), which is 3-4x faster than onnxruntime's CPU GridSample/Resize.
 *
 * All per-frame buffers are allocated in prepare(); render() allocates nothing.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { AvatarEngine, PortraitCache, PreparedPortrait, RenderStats, TrackedFrame } from '../../engineTypes.js';
import type { GrayImage, I420Frame, RgbImage } from '../../../types/image.js';
import type { AvatarSettings } from '../../../types/protocol.js';
import { defaultAvatarSettings } from '../../../types/protocol.js';
import type { ColorFrame, FaceTrack } from '../../../vision/types.js';
import { AppError, InvalidStateError, ModelPackError } from '../../../errors.js';
import { createLogger, type Logger } from '../../../logger.js';
import { ModelPack } from '../../../inference/modelPack.js';
import { Tensor, type OnnxModel } from '../../../inference/onnx.js';
import { createGray, createI420, i420ToGray, i420ToRgb, rgbToGray, rgbToI420 } from '../../../util/image.js';
import { analysisImage, fitRgb } from '../size.js';
import {
  ExpressionEncoder,
  eyelidPolygons,
  L_CLOSE_L,
  L_CLOSE_R,
  L_GAZE_X,
  L_GAZE_Y,
  L_VERGE_X,
  L_VERGE_Y,
  retarget,
} from './expression.js';
import { countFolds, nodeMask } from './folds.js';
import { TrackGuard } from './plausibility.js';
import { fillPolygon, fitAffine, mouthOpenness, solveTps } from './geometry.js';
import { largestFace, N_CTRL, N_RING, preparePortrait, type PreparedFace } from './prepare.js';
import { LearnedRefiner } from './refiner.js';
import { eyelidRemap, FusedWarp, LID_PARAMS } from './warp.js';
import { EYE_CONTOUR, IRIS_LEFT, IRIS_RIGHT, MESH_POINTS, meshIrisRadius } from '../../../vision/mesh/landmarks.js';

/** A face tracker for a video stream (one per engine: it keeps temporal state). */
export interface StreamTracker {
  /** `color` is the same frame in colour (trackers that read colour use it; others ignore it). */
  track(gray: GrayImage, tsMs: number, color?: ColorFrame): FaceTrack | null;
  /** Drops the track: the next frame starts with a detection. */
  reset?(): void;
  close?(): void;
}

/** The vision functions the engine uses (vision-B's tracker module by default; injectable for tools and tests). */
export interface FaceVision {
  /** Which tracker this is (reported with the engine's stats and results). */
  readonly kind?: string;
  /** Whether its trackers read the gray frame (false: they read the colour frame only, so the engine skips the gray). */
  readonly readsGray?: boolean;
  /** All faces in a still image (landmarks in its pixel coordinates); `color`: the same image in colour. */
  analyzeImage(gray: GrayImage, color?: ColorFrame): FaceTrack[] | Promise<FaceTrack[]>;
  /** A new stream tracker. */
  createTracker(): StreamTracker | Promise<StreamTracker>;
  /**
   * The person in a still image: probability per pixel, size x size over the whole image (stretched). Absent: the
   * portrait's head is not cut out and does not move as one piece (the warp pins the background around it).
   */
  segmentPerson?(image: RgbImage): { size: number; data: Float32Array } | Promise<{ size: number; data: Float32Array }>;
}

export interface DefaultEngineOptions {
  /** Model pack folder (models/default). */
  modelPack: string;
  executionProvider?: 'cpu' | 'cuda';
  intraOpThreads?: number;
  /** Long side of the output video (even); default 512. */
  outputSize?: number;
  /** Face analysis and tracking. */
  vision: FaceVision;
  /** Run the whole generator graph instead of fields graph + fused CPU warp; default: only with 'cuda'. */
  fullGraph?: boolean;
  /** Learned refiner pack (refiner.ts); loaded when given and present. null: warp only. */
  refinerPack?: string | null;
  /** Refiner steps (0 = warp only; needs the refiner pack). Default 0; changed later with setSteps(). */
  steps?: number;
  log?: Logger;
}

function clamp01(v: number): number {
  return v < 0 ? 0 : v > 1 ? 1 : v;
}

/** Most refiner steps a caller may ask for (the teacher samples in 8). */
export const MAX_STEPS = 8;
/** TPS regularisation (grid units): keeps near-coincident control points (closed lips) well conditioned. */
const TPS_LAMBDA = 1e-5;
/**
 * How far a folding warp is taken back towards the portrait at rest, in turn (fractions of the motion in use), until
 * it no longer folds; the motion then returns by FOLD_RECOVERY a frame (~0.3 s from 0 to whole at 30 fps), so a
 * performer who keeps a pose the warp cannot show gets a steady, damped avatar rather than one flickering between
 * the whole motion and less.
 */
const FOLD_ALPHAS = [0.8, 0.55, 0.3, 0] as const;
const FOLD_RECOVERY = 0.1;
/** The roll limit (radians) of a portrait without a head layer: its warp pins the background and folds beyond. */
const PINNED_MAX_ROLL = 0.3;
/** Gaze shift, as a fraction of the eye half-width / half-height per unit of performer gaze. */
const GAZE_X_GAIN = 1.4;
const GAZE_Y_GAIN = 1.6;

/** PortraitCache.data of this engine: the prepared face, valid for the same portrait size, output size and crop size. */
interface CachedFace {
  outputSize: number;
  sourceRes: number;
  portrait: [number, number];
  face: PreparedFace;
}

interface FrameState {
  face: PreparedFace;
  /** The warp's targets (grid units): in the head's own frame when the head moves as a layer (`rigid`). */
  ctrl: Float64Array;
  /** The same targets where they land in the output (the refiner and the dataset builder read these). */
  ctrlWorld: Float64Array;
  /** The head moves as one piece (a segmented head layer): the fields warp in its frame, the fused warp moves it. */
  rigid: boolean;
  /**
   * This portrait renders through the whole generator graph (GPU providers). Only portraits without a head layer
   * do: the graph pastes a warped crop over a fixed background and has no moving layer; a head layer's portrait
   * runs the fields graph (on the provider) and the fused pass (CPU) instead.
   */
  full: boolean;
  /** This frame's head motion in grid units, then in output pixels (x' = m0 x + m1 y + m2, y' = m3 x + m4 y + m5). */
  headGrid: Float64Array;
  headPx: Float64Array;
  ctrlF: Float32Array;
  coef: Float32Array;
  mat: Float64Array;
  masks: Float32Array;
  gaze: Float32Array;
  mouth: Float32Array;
  feeds: Record<string, Tensor>;
  fetches: Record<string, Tensor | null>;
  fieldFeeds: Record<string, Tensor>;
  fieldFetches: Record<string, Tensor | null>;
  grid: Float32Array;
  overlay: Float32Array;
  warp: FusedWarp;
  y: Uint8Array;
  uv: Uint8Array;
  gray: GrayImage | null;
  /** The driving frame as the tracker's colour input (points at the frame's own buffer: no copy). */
  color: ColorFrame;
  scratchX: Float64Array;
  scratchY: Float64Array;
  scratch: Float64Array;
  /** Both eyes' lid parameters for the fused warp (warp.ts eyelidRemap). */
  lids: Float64Array;
  /** Grid nodes inside the paste mask: where the fold check looks. */
  nodeMask: Uint8Array;
  /** The target inner-lip polygon on the node grid (a view of `masks`): left out of the fold check. */
  mouthMask: Float32Array;
  /** Iris shift per eye (source pixels) and each eye's box in the paste region, for the fused warp. */
  eyeShift: Float64Array;
  eyeBoxes: Float64Array;
  lidX: Float64Array;
  lidY: Float64Array;
  lashX: Float64Array;
  lashY: Float64Array;
  drivingI420: I420Frame | null;
  outI420: I420Frame | null;
}

/**
 * The default engine. Create with {@link DefaultEngine.create}; `prepare()` once per portrait, then `render()` per
 * driving frame (I420 in, I420 out) or `renderRgb()` for offline tools.
 */
export class DefaultEngine implements AvatarEngine {
  readonly name = 'default';
  readonly #pack: ModelPack;
  /** The whole generator graph (GPU providers) or null (CPU: fields graph + fused JS warp). */
  readonly #full: OnnxModel | null;
  readonly #fields: OnnxModel;
  readonly #vision: FaceVision;
  readonly #outputSize: number;
  readonly #sourceRes: number;
  readonly #maskRes: number;
  readonly #log: Logger;
  #tracker: StreamTracker | null = null;
  #encoder = new ExpressionEncoder();
  #settings: AvatarSettings = { ...defaultAvatarSettings };
  #state: FrameState | null = null;
  #closed = false;
  /** The fraction of the motion in use after folds (1: all of it); see FOLD_ALPHAS. */
  #foldAlpha = 1;
  /** Which tracked faces the avatar follows (plausibility.ts). */
  readonly #guard = new TrackGuard();
  /** Whether the prepared portrait has rendered a frame (lastControl). */
  #rendered = false;
  readonly #refiner: LearnedRefiner | null;
  #steps = 0;
  #refinerNet: 'student' | 'teacher' = 'student';
  /** The steps the engine was created with (what reset() returns to). */
  #initialSteps = 0;

  private constructor(
    pack: ModelPack,
    vision: FaceVision,
    outputSize: number,
    useFullGraph: boolean,
    log: Logger,
    refiner: LearnedRefiner | null,
  ) {
    this.#pack = pack;
    this.#refiner = refiner;
    this.#full = useFullGraph ? pack.model('generator') : null;
    this.#fields = pack.model('fields');
    this.#vision = vision;
    this.#outputSize = outputSize;
    this.#log = log;
    const file = pack.file('generator');
    const dims = (name: string): (number | string)[] => file.inputs.find((v) => v.name === name)?.shape ?? [];
    const ctrl = dims('ctrl');
    if (ctrl[1] !== N_CTRL) {
      throw new ModelPackError(
        pack.name,
        file.path,
        `input "ctrl" has ${String(ctrl[1])} points; this engine uses ${N_CTRL}`,
      );
    }
    const src = dims('source');
    const masks = dims('masks');
    if (typeof src[2] !== 'number' || src[2] !== src[3] || typeof masks[2] !== 'number' || masks[2] !== masks[3]) {
      throw new ModelPackError(pack.name, file.path, 'inputs "source" and "masks" must be fixed squares');
    }
    this.#sourceRes = src[2];
    this.#maskRes = masks[2];
  }

  /** Loads and validates the model pack (ModelPackError when broken). */
  static async create(options: DefaultEngineOptions): Promise<DefaultEngine> {
    const log = options.log ?? createLogger('avatar.engine.default');
    const sessionOptions = {
      executionProvider: options.executionProvider ?? 'cpu',
      intraOpThreads: options.intraOpThreads ?? 1,
    };
    const steps = options.steps ?? 0;
    if (!Number.isInteger(steps) || steps < 0 || steps > MAX_STEPS)
      throw new TypeError(`steps must be an integer 0..${MAX_STEPS}`);
    // The refiner pack is optional: without it the engine is warp only, and asking for steps is an error.
    let refiner: LearnedRefiner | null = null;
    if (options.refinerPack && existsSync(path.join(options.refinerPack, 'manifest.json'))) {
      refiner = await LearnedRefiner.load(options.refinerPack, sessionOptions);
    } else if (steps > 0) {
      throw new AppError(
        'UNSUPPORTED',
        `refiner steps ${steps} asked for, but there is no refiner pack${options.refinerPack ? ` at ${options.refinerPack}` : ''} (train one with npm run train, or use steps 0)`,
      );
    }
    let pack: ModelPack;
    try {
      pack = await ModelPack.load(options.modelPack, sessionOptions);
    } catch (err) {
      refiner?.close();
      throw err;
    }
    try {
      const outputSize = options.outputSize ?? 512;
      if (!Number.isInteger(outputSize) || outputSize < 64 || outputSize % 2 !== 0)
        throw new TypeError('outputSize must be an even integer >= 64');
      const engine = new DefaultEngine(
        pack,
        options.vision,
        outputSize,
        options.fullGraph ?? options.executionProvider === 'cuda',
        log,
        refiner,
      );
      engine.setSteps(steps);
      engine.#initialSteps = steps;
      return engine;
    } catch (err) {
      pack.close();
      refiner?.close();
      throw err;
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Refiner steps now in use (0 = warp only). */
  get steps(): number {
    return this.#steps;
  }

  /** The loaded refiner pack's name and default steps, or null (warp only). */
  get refiner(): { pack: string; defaultSteps: number; hasTeacher: boolean } | null {
    const r = this.#refiner;
    return r ? { pack: r.packName, defaultSteps: r.defaultSteps, hasTeacher: r.hasTeacher } : null;
  }

  /**
   * Sets the refiner steps (0 = warp only) and which network samples them: the distilled student (default) or the
   * teacher (evaluation: the teacher's k = 8 beside the student's k).
   * @throws AppError('UNSUPPORTED') for steps > 0 without a refiner pack; TypeError for a bad value.
   */
  setSteps(steps: number, net: 'student' | 'teacher' = 'student'): void {
    if (!Number.isInteger(steps) || steps < 0 || steps > MAX_STEPS)
      throw new TypeError(`steps must be an integer 0..${MAX_STEPS}`);
    if (steps > 0 && !this.#refiner)
      throw new AppError('UNSUPPORTED', 'this engine has no refiner pack: steps must be 0');
    if (net === 'teacher' && !this.#refiner?.hasTeacher)
      throw new AppError('UNSUPPORTED', 'the refiner pack has no teacher network');
    this.#steps = steps;
    this.#refinerNet = net;
  }

  /** The prepared portrait's data (tests, eval tools); null before prepare(). */
  get prepared(): Readonly<PreparedFace> | null {
    return this.#state?.face ?? null;
  }

  /** The warp's target control points (grid units) of the last rendered frame (the refiner's dataset builder); null
   * before the first render. */
  get lastControl(): Readonly<Float64Array> | null {
    return this.#state && this.#rendered ? this.#state.ctrlWorld : null;
  }

  /** The current smoothed expression latent (tests, eval tools). */
  get latent(): Readonly<Float64Array> {
    return this.#encoder.latent;
  }

  async prepare(portrait: RgbImage, cache?: PortraitCache): Promise<PreparedPortrait> {
    if (this.#closed) throw new InvalidStateError('default engine is closed');
    const cached = this.#fromCache(portrait, cache);
    const prepared = cached ?? (await this.#analyse(portrait));
    // The tracker and the expression latent describe the performer, not the portrait: a new portrait keeps them
    // (and the calibrated neutral).
    this.#tracker ??= await this.#vision.createTracker();
    this.#state = this.#allocate(prepared);
    this.#rendered = false;
    this.#refiner?.prepare(portrait, prepared);
    this.#log.info('portrait prepared', {
      width: prepared.width,
      height: prepared.height,
      paste: [prepared.paste.w, prepared.paste.h],
      mouthOpen: Math.round(prepared.mouthOpen * 1000) / 1000,
      cached: cached !== null,
    });
    const data: CachedFace = {
      outputSize: this.#outputSize,
      sourceRes: this.#sourceRes,
      portrait: [portrait.width, portrait.height],
      face: prepared,
    };
    return { width: prepared.width, height: prepared.height, face: true, cache: { engine: this.name, data } };
  }

  /** The prepared face of an earlier prepare() of this portrait at these sizes (PortraitCache), or null. */
  #fromCache(portrait: RgbImage, cache: PortraitCache | undefined): PreparedFace | null {
    if (cache?.engine !== this.name) return null;
    const c = cache.data as Partial<CachedFace> | null;
    if (!c?.face || c.outputSize !== this.#outputSize || c.sourceRes !== this.#sourceRes) return null;
    if (c.portrait?.[0] !== portrait.width || c.portrait[1] !== portrait.height) return null;
    return c.face;
  }

  /** Face analysis (detection, landmarks, pose) and preparePortrait(): the per-portrait work. */
  async #analyse(portrait: RgbImage): Promise<PreparedFace> {
    const small = analysisImage(portrait);
    const faces = await this.#vision.analyzeImage(rgbToGray(small), {
      format: 'rgb',
      width: small.width,
      height: small.height,
      data: small.data,
    });
    const face = largestFace(faces);
    if (!face) throw new AppError('NO_FACE', 'no face found in the portrait');
    const sx = portrait.width / small.width;
    const sy = portrait.height / small.height;
    const lm = new Float32Array(136);
    // Landmarks are pixel-centre based in the analysed image: map centres, not corners.
    for (let i = 0; i < 68; i++) {
      lm[2 * i] = (face.landmarks[2 * i]! + 0.5) * sx - 0.5;
      lm[2 * i + 1] = (face.landmarks[2 * i + 1]! + 0.5) * sy - 0.5;
    }
    // The irises (a tracker that has them: FaceMesh + Iris), centre and radius per eye in portrait pixels.
    const mesh = face.mesh;
    let irises: Float64Array | null = null;
    let outlines: Float64Array | null = null;
    if (mesh && mesh.length >= 2 * MESH_POINTS) {
      irises = new Float64Array(6);
      outlines = new Float64Array(64);
      let o = 0;
      for (const eye of ['left', 'right'] as const) {
        const c = EYE_CONTOUR[eye];
        for (const idx of [...c.lower, ...[...c.upper].reverse()]) {
          outlines[o++] = (mesh[2 * idx]! + 0.5) * sx - 0.5;
          outlines[o++] = (mesh[2 * idx + 1]! + 0.5) * sy - 0.5;
        }
      }
      for (const [k, eye, c] of [
        [0, 'left', IRIS_LEFT],
        [1, 'right', IRIS_RIGHT],
      ] as const) {
        irises[3 * k] = (mesh[2 * c]! + 0.5) * sx - 0.5;
        irises[3 * k + 1] = (mesh[2 * c + 1]! + 0.5) * sy - 0.5;
        irises[3 * k + 2] = meshIrisRadius(mesh, eye) * sx;
      }
    }
    const person = this.#vision.segmentPerson ? await this.#vision.segmentPerson(small) : null;
    return preparePortrait(
      portrait,
      lm,
      { yaw: face.pose.yaw, pitch: face.pose.pitch, roll: face.pose.roll },
      {
        outputSize: this.#outputSize,
        sourceRes: this.#sourceRes,
      },
      irises,
      outlines,
      person,
    );
  }

  #allocate(face: PreparedFace): FrameState {
    const m = this.#maskRes;
    const { w, h } = face.paste;
    const ctrlF = new Float32Array(N_CTRL * 2);
    const coef = new Float32Array((N_CTRL + 3) * 2);
    const masks = new Float32Array(4 * m * m);
    const gaze = new Float32Array(2);
    const mouth = new Float32Array(8);
    const y = new Uint8Array(w * h);
    const uv = new Uint8Array((w / 2) * (h / 2) * 2);
    const r = this.#sourceRes;
    const feeds: Record<string, Tensor> = {
      source: new Tensor('float32', face.source, [1, 3, r, r]),
      ctrl: new Tensor('float32', ctrlF, [1, N_CTRL, 2]),
      coef: new Tensor('float32', coef, [1, N_CTRL + 3, 2]),
      masks: new Tensor('float32', masks, [1, 4, m, m]),
      gaze: new Tensor('float32', gaze, [1, 2]),
      mouth: new Tensor('float32', mouth, [1, 8]),
      colors: new Tensor('float32', face.colors, [1, 5, 3]),
      region: new Tensor('float32', face.paste.grid, [1, 4]),
      background: new Tensor('float32', face.pasteBackground, [1, 3, h, w]),
      paste_mask: new Tensor('float32', face.pasteMask, [1, 1, h, w]),
    };
    const fetches: Record<string, Tensor | null> = {
      y: new Tensor('uint8', y, [1, 1, h, w]),
      uv: new Tensor('uint8', uv, [1, 2, h / 2, w / 2]),
    };
    const grid = new Float32Array(2 * m * m);
    const overlay = new Float32Array(4 * m * m);
    const fieldFeeds: Record<string, Tensor> = {};
    for (const k of ['ctrl', 'coef', 'masks', 'gaze', 'mouth', 'colors', 'region']) fieldFeeds[k] = feeds[k]!;
    const fieldFetches: Record<string, Tensor | null> = {
      grid: new Tensor('float32', grid, [1, 2, m, m]),
      overlay: new Tensor('float32', overlay, [1, 4, m, m]),
    };
    // The portrait's eyes in source pixels, for moving its irises inside the openings (when it has known irises).
    const R = this.#sourceRes;
    const toPx = (g: number): number => ((g + 1) * R) / 2 - 0.5;
    const irises = face.irises ?? null;
    const outlines = face.eyeOutlines ?? null;
    const warp = new FusedWarp({
      source: face.source,
      sourceRes: R,
      nodeRes: m,
      x0: face.paste.x0,
      y0: face.paste.y0,
      w,
      h,
      background: face.pasteBackground,
      mask: face.pasteMask,
      ...(face.head.segmented
        ? {
            head: {
              width: face.width,
              height: face.height,
              image: face.head.image,
              motion: face.head.motion,
              plate: face.head.plate,
              toImage: face.head.toImage,
              box: face.head.box,
            },
          }
        : {}),
      ...(irises && outlines
        ? {
            eyes: {
              eyePoints: Array.from(outlines, toPx),
              irises: [0, 1].flatMap((k) => [
                toPx(irises[3 * k]!),
                toPx(irises[3 * k + 1]!),
                (irises[3 * k + 2]! * R) / 2,
              ]),
            },
          }
        : {}),
    });
    return {
      face,
      ctrl: new Float64Array(N_CTRL * 2),
      ctrlWorld: new Float64Array(N_CTRL * 2),
      rigid: face.head.segmented,
      full: this.#full !== null && !face.head.segmented,
      headGrid: new Float64Array([1, 0, 0, 0, 1, 0]),
      headPx: new Float64Array([1, 0, 0, 0, 1, 0]),
      ctrlF,
      coef,
      mat: new Float64Array((N_CTRL + 3) * (N_CTRL + 5)),
      masks,
      gaze,
      mouth,
      feeds,
      fetches,
      fieldFeeds,
      fieldFetches,
      grid,
      overlay,
      warp,
      y,
      uv,
      gray: null,
      color: { format: 'i420', width: 0, height: 0, data: new Uint8Array(0) },
      scratchX: new Float64Array(16),
      scratchY: new Float64Array(16),
      scratch: new Float64Array(64),
      lids: new Float64Array(2 * LID_PARAMS),
      nodeMask: nodeMask(face.pasteMask, w, h, m),
      mouthMask: masks.subarray(m * m, 2 * m * m),
      eyeShift: new Float64Array(4),
      eyeBoxes: new Float64Array(8),
      lidX: new Float64Array(6),
      lidY: new Float64Array(6),
      lashX: new Float64Array(4),
      lashY: new Float64Array(4),
      drivingI420: null,
      outI420: null,
    };
  }

  render(driving: I420Frame, out: I420Frame, timestampMs: number): RenderStats {
    const st = this.#state;
    if (this.#closed) throw new InvalidStateError('default engine is closed');
    if (!st || !this.#tracker) throw new InvalidStateError('default engine: render() before prepare()');
    const face = st.face;
    if (out.width !== face.width || out.height !== face.height)
      throw new TypeError('default engine: output size mismatch');
    const t0 = performance.now();
    if (!st.gray || st.gray.width !== driving.width || st.gray.height !== driving.height)
      st.gray = createGray(driving.width, driving.height);
    // The gray frame is for trackers that read gray (dlib) and for the refiner; the FaceMesh tracker reads the I420
    // frame itself, so the full-frame conversion is skipped when nothing needs it.
    if (this.#vision.readsGray !== false || (this.#steps > 0 && this.#refiner)) i420ToGray(driving, st.gray);
    st.color.width = driving.width;
    st.color.height = driving.height;
    st.color.data = driving.data;
    const track = this.#tracker.track(st.gray, timestampMs, st.color);
    return this.#renderFrom(st, track, driving.width, driving.height, out, timestampMs, t0, st.gray);
  }

  /**
   * Private mode: renders from a face tracked elsewhere (the performer's browser, with the same tracker code), skipping
   * the tracker. Everything after tracking is render()'s: the plausibility guard, calibration, the warp, the fold
   * check. The learned refiner reads the driving face's pixels, which this mode never receives: it does not run here
   * (the frame is the warp's, refineMs absent).
   */
  renderTrack(input: TrackedFrame, out: I420Frame, timestampMs: number): RenderStats {
    const st = this.#state;
    if (this.#closed) throw new InvalidStateError('default engine is closed');
    if (!st || !this.#tracker) throw new InvalidStateError('default engine: renderTrack() before prepare()');
    if (out.width !== st.face.width || out.height !== st.face.height)
      throw new TypeError('default engine: output size mismatch');
    return this.#renderFrom(st, input.track, input.width, input.height, out, timestampMs, performance.now(), null);
  }

  /** Everything after tracking: `gray` is the driving frame in gray for the refiner (null: none, it does not run). */
  #renderFrom(
    st: FrameState,
    track: FaceTrack | null,
    width: number,
    height: number,
    out: I420Frame,
    timestampMs: number,
    t0: number,
    gray: GrayImage | null,
  ): RenderStats {
    const face = st.face;
    // A face the avatar should not copy (too close, jumped, not face-shaped) counts as no face: it eases to neutral.
    const issue = this.#guard.check(track, width, height);
    const followed = issue ? null : track;
    const t1 = performance.now();
    const latent = this.#encoder.update(followed, timestampMs);
    // After a frame whose warp folded, the motion comes back gradually (see the fold check below).
    this.#foldAlpha = Math.min(1, this.#foldAlpha + FOLD_RECOVERY);
    this.#buildInputs(st, latent, st.full ? 1 : this.#foldAlpha);
    this.#rendered = true;
    const t2 = performance.now();
    let t3: number;
    let folds = 0;
    let foldFixed = false;
    if (st.full && this.#full) {
      this.#full.run(st.feeds, st.fetches);
      t3 = performance.now();
      this.#paste(st, out);
    } else {
      this.#fields.run(st.fieldFeeds, st.fieldFetches);
      // Fold check: a warp that folds (a triangle of the node grid mapped inside out, inside the paste mask) is taken
      // back towards the portrait at rest until it does not, before anything is rendered. The lips' opening is left
      // out: there the warp stretches the portrait's closed seam into the gap (a thin-plate spline squeezed 10:1
      // overshoots by a fraction of a node), and what is shown there is the mouth's interior.
      folds = countFolds(st.grid, this.#maskRes, st.nodeMask, st.mouthMask);
      if (folds > 0) {
        foldFixed = true;
        const from = this.#foldAlpha;
        for (const f of FOLD_ALPHAS) {
          this.#foldAlpha = from * f;
          this.#buildInputs(st, latent, this.#foldAlpha);
          this.#fields.run(st.fieldFeeds, st.fieldFetches);
          folds = countFolds(st.grid, this.#maskRes, st.nodeMask, st.mouthMask);
          if (folds === 0) break;
        }
      }
      t3 = performance.now();
      out.data.set(face.background.data);
      if (st.rigid) st.warp.runHead(st.grid, st.overlay, out);
      else st.warp.run(st.grid, st.overlay, out);
    }
    const t4 = performance.now();
    let refineMs: number | undefined;
    if (this.#steps > 0 && this.#refiner && followed && gray) {
      const lm =
        followed.rawLandmarks && followed.rawLandmarks.length >= 136 ? followed.rawLandmarks : followed.landmarks;
      this.#refiner.run(out, gray, lm, this.#steps, this.#refinerNet, st.ctrlWorld);
      refineMs = performance.now() - t4;
    }
    return {
      trackMs: t1 - t0,
      latentMs: t2 - t1,
      generateMs: t3 - t2,
      pasteMs: t4 - t3,
      ...(refineMs !== undefined ? { refineMs } : {}),
      face: track !== null,
      folds,
      foldFixed,
      ...(issue ? { faceIssue: issue } : {}),
    };
  }

  /**
   * Offline convenience: RGB driving frame in, RGB output frame out (the same path as render(), through I420).
   * `out` must have the prepared size.
   */
  renderRgb(driving: RgbImage, out: RgbImage, timestampMs: number): RenderStats {
    const st = this.#state;
    if (!st) throw new InvalidStateError('default engine: render() before prepare()');
    const even = (v: number): number => v - (v % 2);
    if (
      !st.drivingI420 ||
      st.drivingI420.width !== even(driving.width) ||
      st.drivingI420.height !== even(driving.height)
    ) {
      st.drivingI420 = createI420(even(driving.width), even(driving.height));
    }
    if (!st.outI420) st.outI420 = createI420(st.face.width, st.face.height);
    const src =
      driving.width % 2 === 0 && driving.height % 2 === 0
        ? driving
        : fitRgb(driving, st.drivingI420.width, st.drivingI420.height);
    rgbToI420(src, st.drivingI420);
    const stats = this.render(st.drivingI420, st.outI420, timestampMs);
    i420ToRgb(st.outI420, out);
    return stats;
  }

  /**
   * The generator's inputs for one latent. `alpha` < 1 moves every control point that far of the way from the
   * portrait at rest (1: the whole motion): how a folding warp is taken back (see render()).
   */
  #buildInputs(st: FrameState, latent: Float64Array, alpha = 1): void {
    const face = st.face;
    const s = this.#settings;
    const ctrl = st.ctrl;
    retarget(
      face,
      latent,
      s,
      this.#encoder.neutralPose,
      ctrl,
      this.#encoder.neutralMouthOpen,
      st.rigid ? undefined : PINNED_MAX_ROLL,
    );
    const fixedFrom = 2 * (68 + N_RING);
    const src = face.ctrlSource;
    if (st.rigid) {
      // The head moves as one piece: its motion is the affine map the ring points (rigid, no depth) went through;
      // the fields warp in the head's own frame (targets taken back through that map, outer anchors where they
      // were), and the fused warp moves the result with the head.
      const m = fitAffine(src, ctrl, 68, N_RING, st.headGrid);
      const det = m[0]! * m[4]! - m[1]! * m[3]!;
      for (let i = 0; i < fixedFrom; i += 2) {
        const x = ctrl[i]! - m[2]!;
        const y = ctrl[i + 1]! - m[5]!;
        ctrl[i] = (m[4]! * x - m[1]! * y) / det;
        ctrl[i + 1] = (-m[3]! * x + m[0]! * y) / det;
      }
      for (let i = fixedFrom; i < ctrl.length; i++) ctrl[i] = src[i]!;
      // Grid units to output pixels: X = kx g + cx (per axis); the head's map in output pixels.
      const [kx, cx, ky, cy] = face.head.toImage;
      const p = st.headPx;
      p[0] = m[0]!;
      p[1] = (m[1]! * kx) / ky;
      p[2] = kx * m[2]! + cx - m[0]! * cx - (m[1]! * kx * cy) / ky;
      p[3] = (m[3]! * ky) / kx;
      p[4] = m[4]!;
      p[5] = ky * m[5]! + cy - (m[3]! * ky * cx) / kx - m[4]! * cy;
      st.warp.setHead(p);
    } else {
      // Fixed anchors on the outer ellipse.
      for (let i = fixedFrom; i < ctrl.length; i++) ctrl[i] = src[i]!;
    }
    if (alpha < 1) for (let i = 0; i < fixedFrom; i++) ctrl[i] = src[i]! + alpha * (ctrl[i]! - src[i]!);
    if (st.rigid) {
      const m = st.headGrid;
      for (let i = 0; i < ctrl.length; i += 2) {
        st.ctrlWorld[i] = m[0]! * ctrl[i]! + m[1]! * ctrl[i + 1]! + m[2]!;
        st.ctrlWorld[i + 1] = m[3]! * ctrl[i]! + m[4]! * ctrl[i + 1]! + m[5]!;
      }
    } else st.ctrlWorld.set(ctrl);
    solveTps(ctrl, face.ctrlSource, N_CTRL, TPS_LAMBDA, st.coef, st.mat);
    for (let i = 0; i < ctrl.length; i++) st.ctrlF[i] = ctrl[i]!;

    // Target masks on the region's node grid: eye openings (gaze) and the inner-lip polygon (mouth interior).
    const m = this.#maskRes;
    const g = face.paste.grid;
    const sxn = (m - 1) / (g[2]! - g[0]!);
    const syn = (m - 1) / (g[3]! - g[1]!);
    st.masks.fill(0);
    const eye = st.masks.subarray(0, m * m);
    const mouthMask = st.masks.subarray(m * m, 2 * m * m);
    const lidMask = st.masks.subarray(2 * m * m, 3 * m * m);
    const lashMask = st.masks.subarray(3 * m * m);
    const poly = (from: number, count: number, mask: Float32Array): void => {
      for (let k = 0; k < count; k++) {
        st.scratchX[k] = (ctrl[2 * (from + k)]! - g[0]!) * sxn;
        st.scratchY[k] = (ctrl[2 * (from + k) + 1]! - g[1]!) * syn;
      }
      fillPolygon(mask, m, st.scratchX, st.scratchY, count, st.scratch);
    };
    poly(36, 6, eye);
    poly(42, 6, eye);
    poly(60, 8, mouthMask);
    // Closing eyelids. The CPU path moves them (warp.ts setLids: the lid's skin stretches down over the eye); the
    // whole graph (GPU providers) paints them (expression.ts eyelidPolygons).
    const k = Math.min(1, s.expressionStrength);
    if (!st.full) {
      const w = face.paste.w;
      const h = face.paste.h;
      const rx = (w - 1) / (g[2]! - g[0]!);
      const ry = (h - 1) / (g[3]! - g[1]!);
      for (const [idx, e, ci, brows] of [
        [0, 36, L_CLOSE_L, [18, 19, 20]],
        [1, 42, L_CLOSE_R, [23, 24, 25]],
      ] as const) {
        for (let i = 0; i < 6; i++) {
          st.scratchX[i] = (ctrl[2 * (e + i)]! - g[0]!) * rx;
          st.scratchY[i] = (ctrl[2 * (e + i) + 1]! - g[1]!) * ry;
        }
        // The brow's lowest point above this eye: the lid's skin never stretches into it.
        let bi: number = brows[0];
        for (const b of brows) if (ctrl[2 * b + 1]! > ctrl[2 * bi + 1]!) bi = b;
        const c = s.eyeRetargeting ? latent[ci]! * k : 0;
        eyelidRemap(
          st.scratchX,
          st.scratchY,
          (ctrl[2 * bi]! - g[0]!) * rx,
          (ctrl[2 * bi + 1]! - g[1]!) * ry,
          c,
          st.lids,
          idx * LID_PARAMS,
        );
      }
      st.warp.setLids(st.lids);
    }
    for (const [e, ci] of [
      [36, L_CLOSE_L],
      [42, L_CLOSE_R],
    ] as const) {
      if (!st.full) break;
      const c = s.eyeRetargeting ? latent[ci]! * k : 0;
      if (!eyelidPolygons(ctrl, e, c, st.lidX, st.lidY, st.lashX, st.lashY)) continue;
      for (let i = 0; i < 6; i++) {
        st.lidX[i] = (st.lidX[i]! - g[0]!) * sxn;
        st.lidY[i] = (st.lidY[i]! - g[1]!) * syn;
      }
      for (let i = 0; i < 4; i++) {
        st.lashX[i] = (st.lashX[i]! - g[0]!) * sxn;
        st.lashY[i] = (st.lashY[i]! - g[1]!) * syn;
      }
      fillPolygon(lidMask, m, st.lidX, st.lidY, 6, st.scratch);
      fillPolygon(lashMask, m, st.lashX, st.lashY, 4, st.scratch);
    }

    // Gaze: iris shift (grid units). The CPU warp moves the irises themselves when the portrait's are known (the
    // fields then shift nothing); otherwise the fields shift the whole eye opening.
    const eyesOn = s.eyeRetargeting;
    const gx = eyesOn ? latent[L_GAZE_X]! * face.eyeHalfWidth * GAZE_X_GAIN * k : 0;
    const gy = eyesOn ? latent[L_GAZE_Y]! * face.eyeHalfHeight * GAZE_Y_GAIN * k : 0;
    const vx = eyesOn ? latent[L_VERGE_X]! * face.eyeHalfWidth * GAZE_X_GAIN * k : 0;
    const vy = eyesOn ? latent[L_VERGE_Y]! * face.eyeHalfHeight * GAZE_Y_GAIN * k : 0;
    if (!st.full && st.warp.movesIrises) {
      st.gaze[0] = 0;
      st.gaze[1] = 0;
      const half = this.#sourceRes / 2;
      const w = face.paste.w;
      const h = face.paste.h;
      const rx = (w - 1) / (g[2]! - g[0]!);
      const ry = (h - 1) / (g[3]! - g[1]!);
      for (const [idx, e] of [
        [0, 36],
        [1, 42],
      ] as const) {
        // Each eye's own direction: gaze + vergence for the image-left eye, gaze - vergence for the other.
        const sgn = idx === 0 ? 1 : -1;
        st.eyeShift[2 * idx] = (gx + sgn * vx) * half;
        st.eyeShift[2 * idx + 1] = (gy + sgn * vy) * half;
        let x0 = Infinity,
          y0 = Infinity,
          x1 = -Infinity,
          y1 = -Infinity;
        for (let i = e; i < e + 6; i++) {
          const x = (ctrl[2 * i]! - g[0]!) * rx;
          const y = (ctrl[2 * i + 1]! - g[1]!) * ry;
          x0 = Math.min(x0, x);
          x1 = Math.max(x1, x);
          y0 = Math.min(y0, y);
          y1 = Math.max(y1, y);
        }
        const pad = 0.25 * (x1 - x0) + 2;
        st.eyeBoxes[4 * idx] = x0 - pad;
        st.eyeBoxes[4 * idx + 1] = y0 - pad;
        st.eyeBoxes[4 * idx + 2] = x1 + pad;
        st.eyeBoxes[4 * idx + 3] = y1 + pad;
      }
      st.warp.setEyes(st.eyeShift, st.eyeBoxes);
    } else {
      st.gaze[0] = gx;
      st.gaze[1] = gy;
    }

    // Mouth frame: centre between the inner corners, axis along them, inner-lip top/bottom in half-width units.
    const ax = ctrl[128]! - ctrl[120]!;
    const ay = ctrl[129]! - ctrl[121]!;
    const hw = Math.max(1e-4, Math.hypot(ax, ay) / 2);
    const cs = ax / (2 * hw);
    const sn = ay / (2 * hw);
    const mcx = (ctrl[128]! + ctrl[120]!) / 2;
    const mcy = (ctrl[129]! + ctrl[121]!) / 2;
    const v = (i: number): number => (-(ctrl[2 * i]! - mcx) * sn + (ctrl[2 * i + 1]! - mcy) * cs) / hw;
    st.mouth[0] = mcx;
    st.mouth[1] = mcy;
    st.mouth[2] = cs;
    st.mouth[3] = sn;
    st.mouth[4] = hw;
    st.mouth[5] = (v(61) + v(62) + v(63)) / 3;
    st.mouth[6] = (v(65) + v(66) + v(67)) / 3;
    // The procedural interior fades in as the mouth opens beyond the portrait's own opening (so a toothy smile
    // keeps its real teeth at rest); a portrait painted with a wide-open mouth keeps its own interior.
    const openMore = (mouthOpenness(ctrl) - face.mouthOpen) / 0.08;
    const ownInterior = (face.mouthOpen - 0.1) / 0.15;
    st.mouth[7] = s.lipRetargeting ? clamp01(openMore) * (1 - clamp01(ownInterior)) : 0;
  }

  #paste(st: FrameState, out: I420Frame): void {
    const face = st.face;
    const W = face.width;
    const H = face.height;
    out.data.set(face.still.data);
    const { x0, y0, w, h } = face.paste;
    for (let r = 0; r < h; r++) out.data.set(st.y.subarray(r * w, (r + 1) * w), (y0 + r) * W + x0);
    const cw = W >> 1;
    const ch = H >> 1;
    const hw = w >> 1;
    const hh = h >> 1;
    const uOff = W * H;
    const vOff = uOff + cw * ch;
    const plane = hw * hh;
    for (let r = 0; r < hh; r++) {
      const row = ((y0 >> 1) + r) * cw + (x0 >> 1);
      out.data.set(st.uv.subarray(r * hw, (r + 1) * hw), uOff + row);
      out.data.set(st.uv.subarray(plane + r * hw, plane + (r + 1) * hw), vOff + row);
    }
  }

  /**
   * Applies the room's settings, `steps` through setSteps() (the network in use is kept). Without a refiner pack,
   * steps > 0 run as 0 instead of throwing: a settings message must never crash the worker, and the session already
   * tells the room (refiner.available = false) that steps have no effect here.
   */
  updateSettings(settings: AvatarSettings): void {
    this.#settings = { ...settings };
    const steps = this.#refiner ? Math.min(Math.max(0, Math.trunc(settings.steps)), MAX_STEPS) : 0;
    if (Number.isFinite(steps) && steps !== this.#steps) this.setSteps(steps, this.#refinerNet);
  }

  recalibrate(): void {
    // A new neutral often means the performer moved or changed: find their face afresh too.
    this.#tracker?.reset?.();
    this.#guard.reset();
    this.#encoder.recalibrate();
  }

  /** Back to as created (AvatarEngine.reset): no portrait, a new performer, default settings; models kept. */
  reset(): void {
    if (this.#closed) throw new InvalidStateError('default engine is closed');
    this.#tracker?.close?.();
    this.#tracker = null;
    this.#state = null;
    this.#encoder = new ExpressionEncoder();
    this.#settings = { ...defaultAvatarSettings };
    this.#foldAlpha = 1;
    this.#guard.reset();
    this.setSteps(this.#initialSteps, this.#refinerNet);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#tracker?.close?.();
    this.#tracker = null;
    this.#state = null;
    this.#pack.close();
    this.#refiner?.close();
  }
}
