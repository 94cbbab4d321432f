#!/usr/bin/env bash
# Configures and builds everything into build/ (programs in build/bin/). Assumes setup.sh ran.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" \
  -DDIFFUSION_PYTHON="$PWD/.venv/bin/python" > build-configure.log 2>&1 \
  || { cat build-configure.log; exit 1; }
cmake --build build -j "$(nproc)"
