import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

/**
 * How to start a worker thread whose entry is `<name>.ts` (source checkout, run through tsx or vitest) or `<name>.js`
 * (compiled) next to the module `selfUrl`. Node 20 workers cannot load .ts through --import, so a source checkout
 * loads the entry through tsx's ESM API, resolved by absolute URL (its exports map is not applied to an eval'd worker).
 */
export function workerSpec(selfUrl: string, name: string): { entry: string | URL; eval: boolean } {
  if (selfUrl.endsWith('.ts')) {
    const tsxDir = path.dirname(createRequire(selfUrl).resolve('tsx/package.json'));
    const tsxApi = pathToFileURL(path.join(tsxDir, 'dist', 'esm', 'api', 'index.mjs')).href;
    const entry = new URL(`./${name}.ts`, selfUrl).href;
    const code = `import(${JSON.stringify(tsxApi)}).then((m) => m.tsImport(${JSON.stringify(entry)}, ${JSON.stringify(selfUrl)}))`;
    return { entry: code, eval: true };
  }
  return { entry: new URL(`./${name}.js`, selfUrl), eval: false };
}
