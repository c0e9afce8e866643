#!/usr/bin/env bash
# Install autoshrink and what it needs on a fresh Debian machine.
#   bash scripts/install.sh          the package, its Python deps, Graphviz, Fashion-MNIST
#   bash scripts/install.sh --test   also test tools and optional extras (ONNX, Ray, Triton,
#                                    Chromium); the tests run Triton's kernels in its CPU interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
apt_packages=(graphviz dataset-fashion-mnist)
extras="onnx"
if [[ "${1:-}" == "--test" ]]; then
  apt_packages+=(chromium)
  extras="onnx,ray,test,triton"
fi
if command -v apt-get >/dev/null; then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  missing=()
  for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if ((${#missing[@]})); then
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi
# Pin the CPU wheel: an unpinned torch may pull a multi-GB CUDA build.
python3 -m pip install -q "torch==2.13.0"
python3 -m pip install -q -e ".[${extras}]"
