/**
 * The default (model-pack) engine: `createDefaultEngine` is what the engine registry calls; `DefaultEngine.create`
 * takes explicit options (offline tools, tests, benchmarks).
 */
import type { Logger } from '../../../logger.js';
import type { EngineOptions } from '../../engineTypes.js';
import { DefaultEngine } from './engine.js';
import { createDefaultVision } from './vision.js';

export { DefaultEngine, type DefaultEngineOptions, type FaceVision, type StreamTracker } from './engine.js';
export { createDefaultVision } from './vision.js';

/** Builds the default engine from the registry's options, with the project's face tracker. */
export async function createDefaultEngine(options: EngineOptions, log: Logger): Promise<DefaultEngine> {
  const engine = await DefaultEngine.create({
    modelPack: options.modelPack,
    executionProvider: options.executionProvider,
    intraOpThreads: options.intraOpThreads,
    outputSize: options.outputSize,
    steps: options.steps ?? 0,
    refinerPack: options.refinerPack ?? null,
    vision: await createDefaultVision(options.tracker ?? 'mesh'),
    log,
  });
  if (options.refinerNet === 'teacher') {
    try {
      engine.setSteps(options.steps ?? 0, 'teacher');
    } catch (err) {
      engine.close();
      throw err;
    }
  }
  return engine;
}
