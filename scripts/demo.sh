#!/usr/bin/env bash
# Installs what is needed, builds, and runs the main job. Until the data-parallel sync
# modes land (they turn it into a local cluster comparing every --sync mode), that is:
# the host memory bandwidth every pszero benchmark is measured against (pszero-bench
# stream), a ring all-reduce beside Open MPI's, and gpt-tiny trained by a local cluster of
# two Megatron tensor-parallel workers.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
build_dir=${PSZERO_BUILD_DIR:-build}
# shellcheck disable=SC2206
extra=(${PSZERO_CMAKE_ARGS:-})
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "${extra[@]}"
cmake --build "$build_dir" -j "$(nproc)"

"$build_dir/bin/pszero-bench" stream --threads "1,$(nproc)"
"$build_dir/bin/pszero-bench" collective --op allreduce --ranks 2 --min-bytes 4K --max-bytes 16M \
  --step-factor 16 --check --peer mpi
"$build_dir/bin/pszero-launch" --workers 2 --tp 2 --model gpt-tiny --steps 10
