/**
 * `npm run bench -- NAME [args]`: runs benchmarks/NAME.ts, whose `main(args)` writes benchmarks/results/NAME.json.
 */
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { UsageError } from './lib/args.js';

const here = path.dirname(new URL(import.meta.url).pathname);
const available = readdirSync(here)
  .filter((f) => f.endsWith('.ts') && f !== 'run.ts')
  .map((f) => f.slice(0, -3));
const [name, ...args] = process.argv.slice(2);
if (!name || !available.includes(name)) {
  process.stderr.write(`usage: npm run bench -- <${available.join('|')}> [args]\n`);
  process.exit(2);
}
const mod = (await import(pathToFileURL(path.join(here, `${name}.ts`)).href)) as {
  main: (a: string[]) => Promise<void>;
};
try {
  await mod.main(args);
} catch (err) {
  if (!(err instanceof UsageError)) throw err;
  process.stderr.write(`${err.message}\n${err.usage}\n`);
  process.exit(2);
}
// @roamhq/wrtc's finalizers segfault at a natural exit even after every peer is closed: exit explicitly.
process.exit(0);
