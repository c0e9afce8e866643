#!/usr/bin/env bash
# Run a command with heap_guard (scripts/heap_guard.c) preloaded: a native kernel that writes
# past the end of a tensor's or a scratchpad's memory then fails where it does, with the Python
# line that called it (PYTHONFAULTHANDLER=1), instead of corrupting the heap for an abort later.
#   bash scripts/heap_guard.sh python -m pytest -q tests/test_batched_search.py
#   bash scripts/heap_guard.sh autoshrink train src/autoshrink/cells/shrinkcnn.json --dataset digits
# Builds the library with the C compiler (cc) into a temporary folder; Linux with glibc only.
# Runs about 2x slower: a check, not a way to run searches.
set -euo pipefail
usage="usage: bash scripts/heap_guard.sh COMMAND [ARGS...]"
if (($# == 0)); then
  echo "$usage" >&2
  exit 2
elif [[ $1 == -h || $1 == --help ]]; then
  echo "$usage"
  exit 0
fi
if ! command -v cc >/dev/null; then
  echo "heap_guard.sh: needs a C compiler (cc); on Debian/Ubuntu: apt-get install gcc libc6-dev" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
built=$(mktemp -d)
trap 'rm -rf "$built"' EXIT
cc -O2 -Wall -shared -fPIC -o "$built/heap_guard.so" "$here/heap_guard.c" -ldl -lpthread
LD_PRELOAD="$built/heap_guard.so${LD_PRELOAD:+:$LD_PRELOAD}" PYTHONFAULTHANDLER=1 "$@"
