#!/usr/bin/env bash
# Gathers what a lent GPU machine needs to run the gpu-labelled tests and the GPU
# benchmarks: its image has CUDA, cuBLAS and NCCL (pip's nvidia-nccl) but none of our other
# libraries (UCX, glog, gflags, OpenBLAS, ...), and nothing can be installed there. So the
# binaries built here (CUDA on) travel with their shared libraries, except glibc's and
# CUDA's own, and scripts/device_run.sh runs them there. docs/testing.md, "On a GPU".
#
#   scripts/device_bundle.sh [BUILD_DIR=build] [OUT=.device]
#   then, with the device tool: run(command=".device/run.sh", carry=[".device"])
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-.device}
bins=(kernels_cuda_test device_staging_test collectives_gpu_test pinned_tensor_test
  ps_sync_device_test device_train_test pszero-bench pszero-launch pszero-worker pszero-server)
for b in "${bins[@]}"; do
  [[ -x "$build/bin/$b" ]] || { echo "device_bundle: $build/bin/$b missing (build with CUDA first)"; exit 1; }
done
if [[ "$out" != /* ]]; then  # inside the repo: keep git (and the tree's size) off it
  grep -qxF "/$out/" .git/info/exclude 2>/dev/null || echo "/$out/" >>.git/info/exclude
fi
rm -rf "$out"
mkdir -p "$out"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib/ucx"
for b in "${bins[@]}"; do cp "$build/bin/$b" "$stage/bin/"; done
# Every library the binaries load, but glibc's and CUDA's (the GPU image brings those).
ldd "$stage"/bin/* | awk '/=> \// {print $3}' | sort -u |
  grep -v -E '/(libc|libm|libdl|libpthread|librt|libresolv|ld-linux[^/]*|libcuda|libcudart|libnccl|libcublas|libcublasLt)\.so' |
  while read -r lib; do cp -L "$lib" "$stage/lib/"; done
# UCX loads its transports as modules at run time.
ucx_modules=$(dirname "$(ldconfig -p | awk '/libucp.so.0 / {print $NF; exit}')")/ucx
for m in "$ucx_modules"/libuct_*.so.0 "$ucx_modules"/libucx_*.so.0; do
  [[ -e "$m" ]] && cp -L "$m" "$stage/lib/ucx/"
done
# Compressed: the working tree and what it carries travel within 64 MiB, and OpenBLAS
# alone is 36 MB.
tar -cJf "$out/bundle.tar.xz" -C "$stage" .
cp scripts/device_run.sh "$out/run.sh"
echo "device_bundle: $out/bundle.tar.xz $(du -h "$out/bundle.tar.xz" | cut -f1)" \
  "($(ls "$stage/bin" | wc -l) binaries, $(ls "$stage/lib" | wc -l) libraries)"
