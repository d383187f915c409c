#!/usr/bin/env bash
# Runs on a lent GPU machine, from the bundle scripts/device_bundle.sh made (as .device/run.sh):
# the gpu-labelled tests (NCCL itself runs in collectives_gpu_test on a communicator of one
# rank: NCCL refuses two ranks on one GPU), the kernels on CUDA against their CPU twins,
# device collectives between two ranks (staged through host memory on one GPU; NCCL between
# two ranks with a host id each), and gpt-small on the GPU. Logs and JSON go to $OUT (the
# device tool brings them back, also when the command is cut off), most telling first:
# every step has a short timeout so that one hang cannot eat the session.
set -uo pipefail
out=${OUT:-/tmp/pszero-device-out}
mkdir -p "$out"
here=/tmp/pszero-device
rm -rf "$here" && mkdir -p "$here" && tar -xJf "$(dirname "$0")/bundle.tar.xz" -C "$here" || exit 1
# NCCL, cuBLAS and the CUDA runtime: pip's nvidia-* packages (nvidia/<name>/lib) and the
# toolkit's lib64.
nvidia_libs=$(python3 -c 'import glob, os, nvidia
print(":".join(sorted({d for r in nvidia.__path__ for d in glob.glob(os.path.join(r, "*", "lib"))})))' \
  2>/dev/null || true)
export LD_LIBRARY_PATH="$here/lib:${nvidia_libs}:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export UCX_MODULE_DIR="$here/lib/ucx" PSZERO_BIN_DIR="$here/bin"
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
{
  nvidia-smi -L
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  ldd "$here/bin/pszero-bench" | grep -E "not found|cuda|nccl|cublas"
} 2>&1 | tee "$out/env.txt"
if ldd "$here"/bin/* 2>/dev/null | grep -q "not found"; then
  echo "device_run: libraries not found (above); nothing run"
  exit 1
fi
rc=0
# A GPU test that skips on a machine with a GPU is a failure (a runtime the driver refuses,
# a library missing), not "no GPU".
run_test() {  # NAME TIMEOUT_S
  timeout "$2" "$here/bin/$1" >"$out/$1.log" 2>&1 || rc=1
  echo "$1: $(grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ tests?' "$out/$1.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED  \] [A-Z]' "$out/$1.log" | sort -u
  if [[ "$gpus" -gt 0 ]] && grep -qE "no CUDA device" "$out/$1.log"; then
    echo "$1: SKIPPED on a machine with $gpus GPU(s):"
    grep -m 3 -E "no CUDA device" "$out/$1.log"
    rc=1
  fi
}
run_test kernels_cuda_test 90
run_test device_staging_test 60
run_test pinned_tensor_test 60
run_test collectives_gpu_test 90
run_test ps_sync_device_test 90
timeout 60 "$here/bin/pszero-bench" kernels --device cuda --output "$out/kernels.json" \
  >"$out/kernels.log" 2>&1 || rc=1
tail -n 20 "$out/kernels.log"
timeout 60 "$here/bin/pszero-bench" collective --backend nccl --ranks 2 --min-bytes 1M \
  --max-bytes 64M --step-factor 8 --iters 10 --warmup 2 --check --output "$out/nccl.json" \
  >"$out/nccl.log" 2>&1 || rc=1
tail -n 6 "$out/nccl.log"
# NCCL itself between two ranks on the one GPU: each rank its own NCCL_HOSTID, so NCCL
# accepts them and connects them over its socket transport; every op checked.
for op in allreduce reduce_scatter allgather broadcast alltoall; do
  timeout 45 "$here/bin/pszero-bench" collective --backend nccl --ranks 2 --nccl-host-per-rank \
    --op "$op" --min-bytes 4K --max-bytes 16M --step-factor 64 --iters 5 --warmup 1 --check \
    --output "$out/nccl2-$op.json" >"$out/nccl2-$op.log" 2>&1 || rc=1
  tail -n 5 "$out/nccl2-$op.log"
done
timeout 45 "$here/bin/pszero-bench" collective --backend nccl --ranks 2 --nccl-host-per-rank \
  --op allreduce --dtype bf16 --redop avg --min-bytes 4K --max-bytes 4M --step-factor 32 \
  --iters 5 --warmup 1 --check >"$out/nccl2-bf16.log" 2>&1 || rc=1
tail -n 4 "$out/nccl2-bf16.log"
# Training on the GPU: gpt-small, one worker, fp32 and bf16 (step time and memory in the
# reports).
for p in fp32 bf16; do
  timeout 120 "$here/bin/pszero-launch" --workers 1 --model gpt-small --steps 6 --device cuda \
    --precision "$p" --report "$out/train-gpt-small-$p.json" >"$out/train-$p.log" 2>&1 || rc=1
  tail -n 3 "$out/train-$p.log"
done
# Last: 22 short training jobs (each with a 60 s deadline; 8 with NCCL between two workers
# on the one GPU, PSZERO_NCCL_HOST_PER_WORKER).
run_test device_train_test 300
exit $rc
