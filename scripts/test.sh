#!/usr/bin/env bash
# Installs what is needed, builds with warnings as errors, and runs every test that fits
# CI's budget. Extra CMake options pass through PSZERO_CMAKE_ARGS, e.g.
#   PSZERO_CMAKE_ARGS=-DPSZERO_CUDA=OFF scripts/test.sh
# PSZERO_BUILD_DIR picks the build directory (default: build, or build-cpu for CUDA=OFF).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

args=(-DCMAKE_BUILD_TYPE=Release -DPSZERO_WERROR=ON -DPSZERO_CUDA=AUTO)
# shellcheck disable=SC2206  # word splitting of the pass-through options is intended
extra=(${PSZERO_CMAKE_ARGS:-})
default_dir=build
for a in "${extra[@]}"; do
  [[ "$a" == "-DPSZERO_CUDA=OFF" ]] && default_dir=build-cpu
done
build_dir=${PSZERO_BUILD_DIR:-$default_dir}
jobs=$(nproc)

cmake -S . -B "$build_dir" -G Ninja "${args[@]}" "${extra[@]}"
cmake --build "$build_dir" -j "$jobs"
ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" -L "unit|integration|fault|gpu" -LE slow
