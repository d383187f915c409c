#!/usr/bin/env bash
# Installs what is needed, builds, and runs the main job: a local cluster of four workers
# trains gpt-tiny and mlp once per data-parallel sync mode (allreduce, zero1, zero2, zero3,
# and ps with one and with two servers), each run writing its report (docs/report.md), and
# `pszero-bench report-table` prints them side by side: step time, tokens/s, model-state
# bytes per rank measured vs the ZeRO formula, bytes per step vs theory, final loss, hash.
# Before that, two short yardsticks: the host memory bandwidth (pszero-bench stream) and a
# ring all-reduce beside Open MPI's; after it, gpt-tiny on 2 replicas of 2 Megatron
# tensor-parallel workers. Within five minutes on two cores.
#
# PSZERO_DEMO_OUT (default: <build>/demo) keeps the reports and each job's log;
# PSZERO_DEMO_GPT_STEPS (8) and PSZERO_DEMO_MLP_STEPS (5) set the steps per run.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
build_dir=${PSZERO_BUILD_DIR:-build}
# shellcheck disable=SC2206
extra=(${PSZERO_CMAKE_ARGS:-})
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "${extra[@]}"
cmake --build "$build_dir" -j "$(nproc)"
bin=$build_dir/bin
out=${PSZERO_DEMO_OUT:-$build_dir/demo}
mkdir -p "$out"
rm -f "$out"/*.json "$out"/*.log
reports=()  # in the order the jobs ran

echo "== host memory bandwidth (STREAM) =="
"$bin/pszero-bench" stream --threads "1,$(nproc)" --array-mb 64 --iters 3

echo "== ring all-reduce, pszero beside Open MPI =="
"$bin/pszero-bench" collective --op allreduce --ranks 2 --min-bytes 4K --max-bytes 4M \
  --step-factor 32 --check --peer mpi

# One job of the main comparison, with --deterministic: every mode sums each gradient in
# the same order, so the sha256 column is the same for every mode of a model (docs/sync.md).
run_job() {
  local model=$1 mode=$2 servers=$3 steps=$4 name=$5
  local rc=0
  echo "-- $name: pszero-launch --workers 4 --servers $servers --sync $mode --model $model --steps $steps --deterministic"
  "$bin/pszero-launch" --workers 4 --servers "$servers" --sync "$mode" --model "$model" \
    --steps "$steps" --deterministic --timeout 240 --report "$out/$name.json" \
    2>"$out/$name.log" || rc=$?
  if ((rc != 0)); then
    tail -n 20 "$out/$name.log"
    echo "demo: $name failed (exit $rc); log: $out/$name.log"
    exit 1
  fi
  reports+=("$out/$name.json")
}

echo "== four workers, every sync mode (run reports: $out) =="
for model in gpt-tiny mlp; do
  steps=${PSZERO_DEMO_GPT_STEPS:-8}
  [[ $model == mlp ]] && steps=${PSZERO_DEMO_MLP_STEPS:-5}
  for mode in allreduce zero1 zero2 zero3; do
    run_job "$model" "$mode" 0 "$steps" "$model-$mode"
  done
  run_job "$model" ps 1 "$steps" "$model-ps1"
  run_job "$model" ps 2 "$steps" "$model-ps2"
done
echo "== the runs side by side =="
"$bin/pszero-bench" report-table "${reports[@]}"

echo "== gpt-tiny on 2 replicas x 2 tensor-parallel workers, zero3 =="
"$bin/pszero-launch" --workers 4 --tp 2 --sync zero3 --model gpt-tiny --steps 5
