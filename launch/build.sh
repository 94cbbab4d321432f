#!/usr/bin/env bash
# Configures and builds into build/ (programs in build/bin/). Assumes setup.sh ran.
#   ./launch/build.sh                       everything, tests included
#   ./launch/build.sh diffusion-train ...   just these targets (the demo builds the programs only)
set -euo pipefail
cd "$(dirname "$0")/.."
# ccache (when present) makes rebuilds after a branch switch or a fresh clone of the same tree cheap.
launcher=()
command -v ccache > /dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
# Paths relative to the checkout, so clones and worktrees share cache entries; the sloppiness
# lets ccache cache translation units that use the precompiled torch header.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"
export CCACHE_SLOPPINESS="${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" "${launcher[@]}" \
  -DDIFFUSION_PYTHON="$PWD/.venv/bin/python" > build-configure.log 2>&1 \
  || { cat build-configure.log; exit 1; }
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build build -j "$(nproc)" "${targets[@]}"
