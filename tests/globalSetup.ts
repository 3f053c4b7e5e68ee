/**
 * vitest global setup: stops the run at once, with one message, when the test media are not in place (instead of
 * dozens of tests failing one by one on a missing file). Checks $AVATAR_TEST_DATA/media against
 * test-data/manifest.json: every file, its size and its sha256 (about 50 ms for the 21 MB).
 */
import { checkMedia, loadManifest, mediaDir, missingDataMessage, REPORT_NAME } from '../scripts/testData.js';

/** The media are missing or wrong (its message says what, where, and what to run). */
export class TestDataMissingError extends Error {
  override name = 'TestDataMissingError';
}

/** Throws a TestDataMissingError when a media file is missing or wrong; notes re-derived copies. */
export async function assertTestData(): Promise<void> {
  const result = await checkMedia(mediaDir, await loadManifest(), { hash: true });
  if (result.problems.length > 0) throw new TestDataMissingError(missingDataMessage(result));
  const rederived = result.files.filter((f) => f.status === 'rederived');
  if (rederived.length > 0) {
    process.stdout.write(
      `test data: ${rederived.length} re-derived clip(s), not the reference bytes ` +
        `(${rederived.map((f) => f.path).join(', ')}; see ${REPORT_NAME} in ${mediaDir}): results on them may differ slightly\n`,
    );
  }
}

export default async function setup(): Promise<void> {
  try {
    await assertTestData();
  } catch (err) {
    if (!(err instanceof TestDataMissingError)) throw err;
    // Not rethrown: vitest 3 reports a throwing global setup as "No test files found" plus the include globs before
    // the error, which sends a newcomer the wrong way. The message alone, and exit code 1, is the whole story.
    process.stderr.write(`\n${err.message}\n\n`);
    process.exit(1);
  }
}
