/**
 * Helpers shared by the offline commands (`avatar render`, `avatar eval`): argument parsing with usage errors,
 * input checks with clear messages, engine creation from the config, and a SIGINT guard.
 */
import { access, stat } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { AvatarEngine } from '../avatar/engineTypes.js';
import type { RgbImage } from '../types/image.js';
import { createEngine, engineNames } from '../avatar/engines/index.js';
import { type EngineOptions } from '../avatar/engineTypes.js';
import type { Config } from '../config.js';
import { AppError } from '../errors.js';
import { createLogger } from '../logger.js';
import { loadImageRgb } from '../util/image.js';

/** A command-line usage error: the command prints the message and its usage, and exits with code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** Parses `argv` strictly (unknown options and stray positionals are usage errors). */
export function parseCommandLine<O extends Options>(
  argv: string[],
  options: O,
): ReturnType<typeof parseArgs<{ options: O; strict: true; allowPositionals: false; args: string[] }>>['values'] {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** Parses a positive integer option (e.g. --max-frames). */
export function positiveInt(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name} must be a positive integer (got "${value}")`);
  return n;
}

/** Parses a non-negative integer option (e.g. --start-frame). */
export function nonNegativeInt(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name} must be a non-negative integer (got "${value}")`);
  return n;
}

/** Checks that an input file exists and is a regular file. @throws AppError('NOT_FOUND'). */
export async function requireFile(file: string, what: string): Promise<string> {
  const abs = path.resolve(file);
  let isFile = false;
  try {
    isFile = (await stat(abs)).isFile();
  } catch (err) {
    throw new AppError('NOT_FOUND', `${what} not found: ${file}`, { cause: err });
  }
  if (!isFile) throw new AppError('BAD_REQUEST', `${what} is not a file: ${file}`);
  return abs;
}

/** Checks that the folder of an output file exists and is writable. @throws AppError('NOT_FOUND'). */
export async function requireOutputDir(file: string, what: string): Promise<string> {
  const abs = path.resolve(file);
  try {
    await access(path.dirname(abs));
  } catch (err) {
    throw new AppError('NOT_FOUND', `folder for the ${what} does not exist: ${path.dirname(file) || '.'}`, {
      cause: err,
    });
  }
  return abs;
}

/** Loads the portrait with a message that names the file. */
export async function loadPortrait(file: string): Promise<RgbImage> {
  const abs = await requireFile(file, 'portrait');
  try {
    return await loadImageRgb(abs);
  } catch (err) {
    if (err instanceof AppError && err.code === 'UNSUPPORTED_MEDIA_TYPE') {
      throw new AppError('UNSUPPORTED_MEDIA_TYPE', `portrait is not a decodable image: ${file}`, { cause: err });
    }
    throw err;
  }
}

/** Engine names the offline commands accept. */
export function offlineEngineNames(): string[] {
  return engineNames();
}

/**
 * Creates an engine in this process (no worker thread: offline runs own the whole process).
 * @throws UsageError for an unknown engine name.
 */
export async function openEngine(
  name: string,
  avatar: Config['avatar'],
  overrides: Partial<EngineOptions> = {},
): Promise<AvatarEngine> {
  if (!engineNames().includes(name))
    throw new UsageError(`unknown engine "${name}" (known: ${engineNames().join(', ')})`);
  const options: EngineOptions = {
    modelPack: avatar.modelPack,
    executionProvider: avatar.executionProvider,
    intraOpThreads: avatar.intraOpThreads,
    outputSize: avatar.outputSize,
    tracker: avatar.tracker,
    steps: avatar.steps,
    refinerPack: avatar.refinerPack,
    ...overrides,
  };
  return createEngine(name, options, createLogger(`cli.${name}`));
}

/** Wraps an engine's prepare() failure for a portrait without a face in a message that names the file. */
export function explainPrepareError(err: unknown, portraitLabel: string): unknown {
  if (err instanceof AppError && err.code === 'NO_FACE' && !err.message.includes(portraitLabel)) {
    // Keep the engine's detail unless it only repeats the headline.
    const detail = /^no face (found|detected)/i.test(err.message) ? '' : `: ${err.message}`;
    return new AppError('NO_FACE', `no face found in the portrait ${portraitLabel}${detail}`, { cause: err });
  }
  return err;
}

/** Sets a flag on the first SIGINT/SIGTERM (the run stops between frames and cleans up); a second one exits. */
export class InterruptGuard {
  #interrupted = false;
  #onSignal = (): void => {
    if (this.#interrupted) process.exit(130);
    this.#interrupted = true;
  };
  #closed = false;

  constructor() {
    process.on('SIGINT', this.#onSignal);
    process.on('SIGTERM', this.#onSignal);
  }

  get interrupted(): boolean {
    return this.#interrupted;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    process.off('SIGINT', this.#onSignal);
    process.off('SIGTERM', this.#onSignal);
  }
}
