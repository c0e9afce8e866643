#!/usr/bin/env bash
# Install autoshrink and what it needs on a fresh Debian/Ubuntu machine, into the project's own
# virtual environment .venv (the distribution's Python refuses system-wide pip installs, PEP 668).
#   bash scripts/install.sh          the package with ONNX export, its Python deps (torch's CPU
#                                    build), Graphviz, Fashion-MNIST
#   bash scripts/install.sh --test   also the test and docs tools (pytest, ruff, mypy, mkdocs,
#                                    a C compiler for scripts/heap_guard.c) and the optional
#                                    extras (Ray, Triton, Chromium); the tests run Triton's
#                                    kernels in its CPU interpreter
# PYTHON=python3.12 picks the interpreter a new .venv is made from (remove .venv to remake it).
# Afterwards: `source .venv/bin/activate` puts `autoshrink` on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: bash scripts/install.sh [--test]   (PYTHON=python3.12 picks the interpreter of a new .venv)"
apt_packages=(graphviz dataset-fashion-mnist)
extras="onnx"
case "$#:${1:-}" in
  0:) ;;
  1:--test)
    apt_packages+=(chromium gcc libc6-dev)
    extras="onnx,ray,test,triton,docs"
    ;;
  1:-h | 1:--help) echo "$usage"; exit 0 ;;
  *) echo "install.sh: unknown arguments: $*" >&2; echo "$usage" >&2; exit 2 ;;
esac
PYTHON_SET="${PYTHON:-}"
PYTHON="${PYTHON:-python3}"
# a PYTHON given that cannot run is named; a missing default python3 comes with python3-venv
if [[ -n "$PYTHON_SET" ]] && ! "$PYTHON" -c '' 2>/dev/null; then
  echo "install.sh: cannot run $PYTHON; set PYTHON to an interpreter's name or path" >&2
  exit 2
fi
# a .venv made from an interpreter since removed (a pyenv version uninstalled, a checkout copied
# from another machine) cannot be mended in place: venv stopped at "[Errno 2] No such file"
if [[ -L .venv/bin/python && ! -e .venv/bin/python ]]; then
  echo "install.sh: .venv/bin/python links to $(readlink -m .venv/bin/python), which is not" \
    "there; remove .venv to make it again" >&2
  exit 2
fi
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
elif [[ -n "${PYTHON_SET:-}" ]]; then
  wanted=$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')
  have=$(.venv/bin/python -c 'import sys; print(sys.version.split()[0])')
  if [[ "$wanted" != "$have" ]]; then
    echo "install.sh: warning: .venv has Python $have, not $PYTHON's $wanted; remove .venv to" \
      "make it again with $PYTHON" >&2
  fi
fi
# A .venv without pip -- its making stopped while ensurepip ran (Ctrl-C in a first install), or
# made by a Python without ensurepip -- gets it as venv would have given it.
if ! .venv/bin/python -c 'import pip' 2>/dev/null; then
  echo "install.sh: .venv has no pip; adding it" >&2
  .venv/bin/python -m ensurepip --upgrade --default-pip >/dev/null
fi
pip_install() { .venv/bin/python -m pip install -q "$@"; }
pip_install --upgrade pip
# torch's CPU build: PyPI's Linux wheel is the CUDA one, several GB. Where pip's own sources
# hold the CPU wheel (a local wheel folder) it comes from there, else from PyTorch's CPU index;
# where neither has it, PyPI's build is installed, with a warning.
TORCH=2.13.0
if ! pip_install "torch==$TORCH+cpu" 2>/dev/null &&
  ! pip_install --retries 1 --extra-index-url https://download.pytorch.org/whl/cpu \
    "torch==$TORCH+cpu" 2>/dev/null; then
  echo "install.sh: warning: no CPU build of torch $TORCH reachable; installing PyPI's" \
    "(on Linux the CUDA build, several GB)" >&2
  pip_install "torch==$TORCH"
fi
pip_install -e ".[${extras}]"
# The lint and type check CI runs: one release each, so a new formatter style or a new mypy
# rule cannot turn CI red by itself.
if [[ "$extras" == *test* ]]; then
  pip_install "ruff==0.17.6" "mypy==2.4.1"
fi
