#!/usr/bin/env bash
# Install autoshrink and what it needs on a fresh Debian/Ubuntu machine, into the project's own
# virtual environment .venv (the distribution's Python refuses system-wide pip installs, PEP 668).
#   bash scripts/install.sh          the package, its Python deps, Graphviz, Fashion-MNIST
#   bash scripts/install.sh --test   also test and docs tools and optional extras (ONNX, Ray,
#                                    Triton, Chromium); the tests run Triton's kernels in its CPU
#                                    interpreter
# Afterwards: `source .venv/bin/activate` puts `autoshrink` on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
apt_packages=(graphviz dataset-fashion-mnist)
extras="onnx"
if [[ "${1:-}" == "--test" ]]; then
  apt_packages+=(chromium)
  extras="onnx,ray,test,triton,docs"
fi
PYTHON="${PYTHON:-python3}"
# Debian splits venv (and ensurepip) out of python3: add it when venv cannot bootstrap pip.
if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  apt_packages+=(python3-venv)
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
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# Pin the CPU wheel: an unpinned torch may pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[${extras}]"
# The lint and type check CI runs: one release each, so a new formatter style or a new mypy
# rule cannot turn CI red by itself.
if [[ "$extras" == *test* ]]; then
  .venv/bin/python -m pip install -q "ruff==0.17.6" "mypy==2.4.1"
fi
