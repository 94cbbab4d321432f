#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, and runs the whole suite
# (unit, MPI at 1-4 ranks, end-to-end CLI) with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
./launch/setup.sh
./launch/build.sh
cd build
ctest --output-on-failure --timeout 900 -j "$(nproc)" "$@"
