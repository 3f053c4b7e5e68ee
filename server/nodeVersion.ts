/**
 * The Node majors the server is tested on: uWebSockets.js 20.57 has native builds for Node 20, 22, 24 and 25 (ABI 115,
 * 127, 137, 141); 25 is not an LTS line and is not tested. Keep in step with scripts/check-node.mjs and the README.
 * Pure: imports nothing, so the CLI and tests can ask without loading the server.
 */
export const supportedNodeMajors: readonly number[] = [20, 22, 24];

/** Why this Node cannot run the server, or null when it can. */
export function unsupportedNode(version: string = process.versions.node): string | null {
  const [major] = version.split('.').map(Number);
  return major !== undefined && supportedNodeMajors.includes(major)
    ? null
    : `unsupported Node version ${version}: the server runs on Node ${supportedNodeMajors.join(', ')}`;
}
