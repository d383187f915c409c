#!/usr/bin/env bash
# Runs on a lent GPU machine, from the bundle scripts/device_bundle.sh made (as .device/run.sh):
# the gpu-labelled tests (NCCL itself runs in collectives_gpu_test on a communicator of one
# rank: NCCL refuses two ranks on one GPU), the kernels on CUDA against their CPU twins, and
# device all-reduce between two ranks (staged through host memory on one GPU, NCCL with
# two or more). Logs and JSON go to $OUT (the device tool brings them back).
set -uo pipefail
out=${OUT:-/tmp/pszero-device-out}
mkdir -p "$out"
here=/tmp/pszero-device
rm -rf "$here" && mkdir -p "$here" && tar -xJf "$(dirname "$0")/bundle.tar.xz" -C "$here" || exit 1
# NCCL from pip's nvidia-nccl package, the CUDA runtime and cuBLAS from the toolkit.
nccl=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null || true)
export LD_LIBRARY_PATH="$here/lib:${nccl}:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export UCX_MODULE_DIR="$here/lib/ucx" PSZERO_BIN_DIR="$here/bin"
{ nvidia-smi -L; ldd "$here/bin/pszero-bench" | grep -E "not found|cuda|nccl|cublas"; } 2>&1 | tee "$out/env.txt"
rc=0
for t in kernels_cuda_test device_staging_test collectives_gpu_test pinned_tensor_test \
  ps_sync_device_test device_train_test; do
  timeout 300 "$here/bin/$t" >"$out/$t.log" 2>&1 || rc=1
  echo "$t: $(grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ tests?' "$out/$t.log" | tr '\n' ' ')"
done
timeout 120 "$here/bin/pszero-bench" kernels --device cuda --output "$out/kernels.json" \
  >"$out/kernels.log" 2>&1 || rc=1
tail -n 20 "$out/kernels.log"
timeout 120 "$here/bin/pszero-bench" collective --backend nccl --ranks 2 --min-bytes 1M \
  --max-bytes 256M --step-factor 16 --check --output "$out/nccl.json" \
  >"$out/nccl.log" 2>&1 || rc=1
tail -n 10 "$out/nccl.log"
# Training on the GPU: gpt-small, one worker, fp32 and bf16 (step time and memory in the
# reports).
for p in fp32 bf16; do
  timeout 180 "$here/bin/pszero-launch" --workers 1 --model gpt-small --steps 6 --device cuda \
    --precision "$p" --report "$out/train-gpt-small-$p.json" >"$out/train-$p.log" 2>&1 || rc=1
  tail -n 3 "$out/train-$p.log"
done
exit $rc
