#!/usr/bin/env bash
# Set up (in .venv) and run a real AutoShrink search on the embedded digits data set.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
source .venv/bin/activate
autoshrink search --preset demo --out "$PWD/runs/demo-$(date +%Y%m%d-%H%M%S)" "$@"  # where it is, wherever it was run from
