#!/usr/bin/env bash
# Set up and run a real AutoShrink search on the embedded digits data set (about 3 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
autoshrink search --preset demo --out "runs/demo-$(date +%Y%m%d-%H%M%S)" "$@"
