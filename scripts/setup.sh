#!/usr/bin/env bash
# Installs exactly the Debian packages that pszero's build, tests and plots need.
# Idempotent: apt-get runs only when a package is missing, so a second run changes nothing.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config ccache git
  libucx-dev ucx-utils
  libboost-dev
  libgoogle-glog-dev
  libgtest-dev libgmock-dev
  libbenchmark-dev
  libcli11-dev
  nlohmann-json3-dev
  libopenblas-dev
  libssl-dev openssl
  clang libclang-rt-14-dev clang-format
  openmpi-bin libopenmpi-dev
  iproute2 procps
  python3 python3-matplotlib
)

# Opt-in: PSZERO_WITH_TORCH=1 also installs Debian's PyTorch (CPU, with gloo) for
# `pszero-bench train --peer torch`. The default path never installs it.
if [[ "${PSZERO_WITH_TORCH:-0}" == 1 ]]; then
  PACKAGES+=(python3-torch)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
