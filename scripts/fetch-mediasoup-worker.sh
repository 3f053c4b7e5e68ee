#!/usr/bin/env bash
# Gets the mediasoup worker binary for the installed mediasoup (3.18.1) by running mediasoup's own postinstall
# (node_modules/mediasoup/npm-scripts.mjs postinstall): it downloads the prebuilt worker for this platform from
# GitHub, or builds it locally (needs python3, make, a C++ compiler, meson >= 1.1 and network access for its
# subprojects). The project installs mediasoup with its install script denied ("allowScripts": {"mediasoup": false}),
# so that offline installs work; this script is the one explicit step that fetches the worker.
#
# Usage: npm run mediasoup:worker      (or: bash scripts/fetch-mediasoup-worker.sh)
# Then:  start the server as usual (fanout.mode 'auto' finds the worker), or point MEDIASOUP_WORKER_BIN at it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pkg="$root/node_modules/mediasoup"
bin="$pkg/worker/out/Release/mediasoup-worker"

if [[ ! -f "$pkg/npm-scripts.mjs" ]]; then
  echo "fetch-mediasoup-worker: $pkg/npm-scripts.mjs not found; run npm ci first." >&2
  exit 1
fi

if [[ -x "$bin" ]]; then
  echo "mediasoup worker already present: $bin"
  exit 0
fi

# The prebuilt download comes from GitHub releases; check that it is reachable before starting, so that an offline
# machine gets a clear message instead of a long failing local build.
if ! node -e "fetch('https://github.com', { method: 'HEAD', signal: AbortSignal.timeout(8000) }).then(() => process.exit(0), () => process.exit(1))"; then
  echo "fetch-mediasoup-worker: github.com is not reachable (offline?). The mediasoup worker cannot be downloaded here." >&2
  echo "  Either run this script on a machine with internet access, or build/copy a mediasoup 3.18.1 worker and set" >&2
  echo "  MEDIASOUP_WORKER_BIN=/path/to/mediasoup-worker. Without a worker the server uses direct fan-out." >&2
  exit 2
fi

# MEDIASOUP_WORKER_BIN would make the postinstall skip the download: unset it for this run.
(cd "$pkg" && env -u MEDIASOUP_WORKER_BIN node npm-scripts.mjs postinstall)

if [[ ! -x "$bin" ]]; then
  echo "fetch-mediasoup-worker: mediasoup's postinstall finished but $bin is missing." >&2
  exit 1
fi
echo "mediasoup worker: $bin"
echo "It is found automatically (fanout.mode 'auto' or 'sfu'); or export MEDIASOUP_WORKER_BIN=$bin"
