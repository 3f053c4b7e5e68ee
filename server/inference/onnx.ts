/**
 * ONNX sessions, one per model file (and options) per process, with a synchronous run.
 *
 * The avatar engine's `render()` is synchronous (it runs inside an AvatarSession worker, off the signaling loop), so
 * this module drives onnxruntime-node's native session directly: `InferenceSession.run()` of the public API only wraps
 * the same native call in a Promise + setImmediate, which would cost a macrotask per frame. Inputs and outputs are
 * onnxruntime `Tensor`s, and outputs may be preallocated (the native binding writes into them).
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { Tensor } from 'onnxruntime-node';
import { createLogger } from '../logger.js';

const log = createLogger('inference.onnx');
const require = createRequire(import.meta.url);

/** Element types as onnxruntime-common names them. */
export type TensorType = Tensor.Type;

/** One input's or output's declared metadata: a dimension is a number or a symbolic name (dynamic). */
export interface ValueInfo {
  name: string;
  type: TensorType;
  shape: (number | string)[];
}

export interface SessionOptions {
  /** 'cpu' (default) or 'cuda'. */
  executionProvider: 'cpu' | 'cuda';
  /** Intra-op threads; default 1. */
  intraOpThreads: number;
}

interface RawMeta {
  name: string;
  isTensor: boolean;
  type: number;
  shape: number[];
  symbolicDimensions: string[];
}
interface NativeSession {
  loadModel(file: string, options: Record<string, unknown>): void;
  readonly inputMetadata: RawMeta[];
  readonly outputMetadata: RawMeta[];
  run(
    feeds: Record<string, Tensor>,
    fetches: Record<string, Tensor | null>,
    options: Record<string, unknown>,
  ): Record<string, Tensor>;
  dispose(): void;
}
interface NativeBinding {
  binding: { InferenceSession: new () => NativeSession };
  initOrt(): void;
}

// Index = ONNX TensorProto data type; as onnxruntime-node's backend maps them.
const typeNames: (TensorType | undefined)[] = [
  undefined,
  'float32',
  'uint8',
  'int8',
  'uint16',
  'int16',
  'int32',
  'int64',
  'string',
  'bool',
  'float16',
  'float64',
  'uint32',
  'uint64',
];

let native: NativeBinding | null = null;
function binding(): NativeBinding {
  if (!native) {
    native = require('onnxruntime-node/dist/binding.js') as NativeBinding;
    native.initOrt();
  }
  return native;
}

function toInfo(m: RawMeta): ValueInfo {
  const type = typeNames[m.type];
  if (!m.isTensor || type === undefined) throw new TypeError(`unsupported ONNX value "${m.name}" (type ${m.type})`);
  const shape = m.shape.map((d, i) => (d >= 0 ? d : m.symbolicDimensions[i] || '?'));
  return { name: m.name, type, shape };
}

/**
 * A loaded ONNX model. Obtain with {@link OnnxModel.load}: the same file with the same options returns the same
 * underlying session (reference counted), so a process holds one session per model however many engines use it.
 * `close()` drops this handle; the session is released with its last handle.
 */
export class OnnxModel {
  readonly file: string;
  readonly inputs: readonly ValueInfo[];
  readonly outputs: readonly ValueInfo[];
  readonly options: Readonly<SessionOptions>;
  readonly #shared: SharedSession;
  #closed = false;

  private constructor(file: string, options: SessionOptions, shared: SharedSession) {
    this.file = file;
    this.options = options;
    this.#shared = shared;
    this.inputs = shared.inputs;
    this.outputs = shared.outputs;
  }

  /** Input names, in model order. */
  get inputNames(): string[] {
    return this.inputs.map((v) => v.name);
  }
  /** Output names, in model order. */
  get outputNames(): string[] {
    return this.outputs.map((v) => v.name);
  }
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Loads (or reuses) the session for `file`. Throws the runtime's error when the file is not a loadable model or
   * the execution provider is unavailable (callers wrap it with the pack and file names).
   */
  static async load(file: string, options: Partial<SessionOptions> = {}): Promise<OnnxModel> {
    const opts: SessionOptions = {
      executionProvider: options.executionProvider ?? 'cpu',
      intraOpThreads: options.intraOpThreads ?? 1,
    };
    const abs = path.resolve(file);
    const key = `${abs}|${opts.executionProvider}|${opts.intraOpThreads}`;
    let shared = sessions.get(key);
    if (!shared) {
      // Session creation is synchronous in the binding; yield once so callers awaiting several loads interleave.
      await new Promise((r) => setImmediate(r));
      shared = sessions.get(key) ?? createShared(key, abs, opts);
    }
    shared.refs++;
    return new OnnxModel(abs, opts, shared);
  }

  /**
   * Runs the model synchronously. `fetches` names the outputs to compute; a Tensor value is a preallocated output
   * that the runtime writes into (its dims must match), null lets the runtime allocate.
   */
  run(feeds: Record<string, Tensor>, fetches: Record<string, Tensor | null>): Record<string, Tensor> {
    if (this.#closed) throw new Error(`OnnxModel ${path.basename(this.file)} is closed`);
    return this.#shared.session.run(feeds, fetches, {});
  }

  /** Drops this handle (idempotent); the session is released with the last handle. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#shared.refs--;
    if (this.#shared.refs === 0) {
      sessions.delete(this.#shared.key);
      this.#shared.session.dispose();
      log.debug('session released', { file: path.basename(this.file) });
    }
  }
}

interface SharedSession {
  key: string;
  session: NativeSession;
  inputs: ValueInfo[];
  outputs: ValueInfo[];
  refs: number;
}
const sessions = new Map<string, SharedSession>();

function createShared(key: string, file: string, opts: SessionOptions): SharedSession {
  const session = new (binding().binding.InferenceSession)();
  session.loadModel(file, {
    executionProviders: [{ name: opts.executionProvider }],
    intraOpNumThreads: opts.intraOpThreads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  const shared: SharedSession = {
    key,
    session,
    inputs: session.inputMetadata.map(toInfo),
    outputs: session.outputMetadata.map(toInfo),
    refs: 0,
  };
  sessions.set(key, shared);
  log.debug('session created', { file: path.basename(file), ep: opts.executionProvider, threads: opts.intraOpThreads });
  return shared;
}

export { Tensor };
