#!/usr/bin/env node
// `npx avatar <command> ...`: the compiled CLI (dist/, `npm run build`; what the image runs) where the TypeScript
// sources are absent, else the TypeScript CLI through tsx (installed as a dependency), so a checkout never runs a
// stale build.
import { existsSync } from 'node:fs';

const source = new URL('../server/cli/index.ts', import.meta.url);
const compiled = new URL('../dist/server/cli/index.js', import.meta.url);
if (!existsSync(source) && existsSync(compiled)) {
  await import(compiled.href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import(source.href);
}
