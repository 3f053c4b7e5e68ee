/**
 * Entry point for `npm start` (and `avatar serve`, which runs the same function): see server/serve.ts.
 */
import { runServer } from './serve.js';

runServer(process.env).then(
  (code) => process.exit(code),
  () => process.exit(1),
);
