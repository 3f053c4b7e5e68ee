import { defineConfig } from 'vitest/config';
import { resolveMediasoupWorkerBin, WORKER_BIN_ENV } from './scripts/testData.js';

// The SFU tests run against a real mediasoup worker when there is one (MEDIASOUP_WORKER_BIN, or bin/mediasoup-worker
// in the test data folder): every test process gets the resolved absolute path before mediasoup loads.
const workerBin = resolveMediasoupWorkerBin();

// @roamhq/wrtc segfaults under worker threads: every test file runs in its own forked process.
export default defineConfig({
  test: {
    pool: 'forks',
    poolOptions: { forks: { singleFork: false, maxForks: 2, minForks: 1 } },
    include: ['tests/**/*.test.ts'],
    // Stops the run with one message when the test media are missing (npm run fetch-test-data fetches them).
    globalSetup: ['tests/globalSetup.ts'],
    // Generous: these are safety nets on shared 2-core machines, not speed checks (speed goals live in benchmarks/).
    testTimeout: 180_000,
    hookTimeout: 120_000,
    reporters: ['default'],
    env: workerBin ? { [WORKER_BIN_ENV]: workerBin } : {},
  },
});
