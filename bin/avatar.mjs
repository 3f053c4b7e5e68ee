#!/usr/bin/env node
// `npx avatar <command> ...`: runs the TypeScript CLI through tsx (installed as a dependency).
import { register } from 'tsx/esm/api';
register();
await import('../server/cli/index.ts');
