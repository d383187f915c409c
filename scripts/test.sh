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

# Every test that fits CI's budget.
ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" -L "unit|integration|fault|gpu" -LE slow

# Sanitizer stages (docs/testing.md): each in its own build directory, CPU only, -Werror,
# -O1 with line tables, building only the test binaries it runs (target tests-<label>)
# and the programs they start. Reports from uninstrumented third-party libraries (UCX,
# glog, OpenBLAS, libgomp) are suppressed by tests/sanitizers/*.supp, never our frames.
# Each stage prints one summary line; a finding fails the test that caused it, and the
# stage prints that test's output and fails the script.
sup="$PWD/tests/sanitizers"
san_args=(-G Ninja -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_FLAGS_RELEASE=-O1 -DNDEBUG"
  -DPSZERO_CUDA=OFF -DPSZERO_WERROR=ON)
# sanitizer_stage NAME DIR SANITIZE "TARGETS" SKIP_FILE CTEST_ARGS...
# SKIP_FILE: regular expressions (one a line, # comments) of tests the stage leaves out,
# each with its reason in the file.
sanitizer_stage() {
  local name=$1 dir=$2 sanitize=$3 targets=$4 skip_file=$5
  shift 5
  local start=$SECONDS skip
  skip=$(grep -v -E '^ *(#|$)' "$skip_file" | paste -sd '|' || true)
  if [[ -n "$skip" ]]; then set -- "$@" -E "$skip"; fi
  mkdir -p "$dir"
  cmake -S . -B "$dir" "${san_args[@]}" -DPSZERO_SANITIZE="$sanitize" >"$dir/configure.log" 2>&1 ||
    { cat "$dir/configure.log"; echo "$name: configure FAILED"; exit 1; }
  # shellcheck disable=SC2086  # the target list is split on purpose
  cmake --build "$dir" -j "$jobs" --target $targets
  if ! ctest --test-dir "$dir" --output-on-failure -j "$jobs" "$@" >"$dir/ctest.log" 2>&1; then
    grep -v -E '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .* Passed' "$dir/ctest.log" | tail -n 200
    echo "$name: FAILED ($(grep -E 'tests passed' "$dir/ctest.log"); log: $dir/ctest.log)"
    exit 1
  fi
  echo "$name: $(grep -E 'tests passed' "$dir/ctest.log") (ctest ${*:1:2}; $((SECONDS - start)) s)"
}

# ASan + UBSan: the unit and fault tests (label asan: those that do not link the
# benchmarks' library; a finding in a child process, say a pszero-worker under
# pszero-launch, fails that process and so the test).
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=0
export LSAN_OPTIONS="suppressions=$sup/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$sup/ubsan.supp"
sanitizer_stage "asan+ubsan" "${PSZERO_ASAN_BUILD_DIR:-build-asan}" address,undefined \
  "tests-asan" "$sup/asan.skip" -L asan -LE "slow|gpu"
unset ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS

# TSan: the concurrency tests (label tsan: transport, collectives with ranks as threads,
# CollectiveStream, the flight recorder, rendezvous service and clients, KV store).
# UCX's memory hooks (libucm patches madvise, mmap and malloc) run inside threads TSan has
# already retired and crash it; the transport does not need them.
export TSAN_OPTIONS="suppressions=$sup/tsan.supp:second_deadlock_stack=1:print_suppressions=0"
export UCX_MEM_MMAP_HOOK_MODE=none UCX_MEM_MALLOC_HOOKS=no
sanitizer_stage "tsan" "${PSZERO_TSAN_BUILD_DIR:-build-tsan}" thread "tests-tsan" \
  "$sup/tsan.skip" -L tsan
unset TSAN_OPTIONS UCX_MEM_MMAP_HOOK_MODE UCX_MEM_MALLOC_HOOKS
