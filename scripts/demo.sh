#!/usr/bin/env bash
# Installs what is needed, builds, and runs the main job. Today that is the host memory
# bandwidth that every later pszero benchmark is measured against (pszero-bench stream);
# the sync-modes work turns it into a local cluster comparing every --sync mode.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
build_dir=${PSZERO_BUILD_DIR:-build}
# shellcheck disable=SC2206
extra=(${PSZERO_CMAKE_ARGS:-})
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "${extra[@]}"
cmake --build "$build_dir" -j "$(nproc)"

"$build_dir/bin/pszero-bench" stream --threads "1,$(nproc)"
