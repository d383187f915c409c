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

# Fuzz the control-plane frame decoder (common/wire.h) for a bounded number of runs:
# clang + libFuzzer in its own build directory, building only the fuzz target. Inputs
# libFuzzer finds go to build-fuzz/corpus, never into the source tree.
fuzz_dir=${PSZERO_FUZZ_BUILD_DIR:-build-fuzz}
mkdir -p "$fuzz_dir/corpus"
cmake -S . -B "$fuzz_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPSZERO_CUDA=OFF -DPSZERO_FUZZ=ON \
  -DPSZERO_WERROR=ON -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  >"$fuzz_dir/configure.log" || { cat "$fuzz_dir/configure.log"; exit 1; }
cmake --build "$fuzz_dir" -j "$jobs" --target wire_fuzzer
if ! "$fuzz_dir/bin/wire_fuzzer" -runs=1000000 -seed=1 -max_len=4096 \
  "$fuzz_dir/corpus" tests/fuzz/wire_seeds >"$fuzz_dir/fuzz.log" 2>&1; then
  tail -n 40 "$fuzz_dir/fuzz.log"
  echo "wire_fuzzer: FAILED (log: $fuzz_dir/fuzz.log)"
  exit 1
fi
echo "wire_fuzzer: $(grep -E '^Done [0-9]+ runs' "$fuzz_dir/fuzz.log"), no crash"

# Every test that fits CI's budget; its summary is the last thing this script prints.
ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" -L "unit|integration|fault|gpu" -LE slow
