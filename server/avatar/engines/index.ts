/**
 * The engine registry: a name -> factory map. Adding an engine is one line in `factories`.
 * Runs inside the avatar worker thread (server/avatar/worker.ts), never on the signaling loop.
 */
import type { AvatarEngine, EngineOptions } from '../engineTypes.js';
import type { Logger } from '../../logger.js';
import { AppError } from '../../errors.js';
import { PortraitEngine } from './portrait.js';
import { DiagnosticPassthroughEngine } from './passthrough.js';
import { createDefaultEngine } from './default/index.js';

export type EngineFactory = (options: EngineOptions, log: Logger) => AvatarEngine | Promise<AvatarEngine>;

const factories: Record<string, EngineFactory> = {
  default: createDefaultEngine,
  portrait: (o) => new PortraitEngine({ outputSize: o.outputSize }),
  passthrough: (o) => new DiagnosticPassthroughEngine({ outputSize: o.outputSize }),
};

/** Engines that can run a refiner and accept steps > 0 (the default engine checks that its refiner pack exists). */
const refinerEngines = new Set<string>(['default']);

/** Names that createEngine() accepts. */
export function engineNames(): string[] {
  return [...new Set([...Object.keys(factories), 'default'])];
}

/**
 * Creates an engine by name. 'default' is the model-pack engine once it is registered; until then it runs the
 * portrait engine and says so in the log.
 * @throws AppError('CONFIG_INVALID') for an unknown name.
 */
export async function createEngine(name: string, options: EngineOptions, log: Logger): Promise<AvatarEngine> {
  let factory = factories[name];
  if (!factory && name === 'default') {
    log.info('no model-pack engine is registered yet: engine "default" runs the portrait engine (no animation)');
    factory = factories.portrait;
  }
  if (!factory)
    throw new AppError('CONFIG_INVALID', `unknown avatar engine "${name}" (known: ${engineNames().join(', ')})`);
  const steps = options.steps ?? 0;
  if (!Number.isInteger(steps) || steps < 0) throw new TypeError('steps must be a non-negative integer');
  if (steps > 0 && !refinerEngines.has(name)) {
    throw new AppError('UNSUPPORTED', `engine "${name}" has no refiner: steps must be 0 (got ${steps})`);
  }
  return factory(options, log);
}
