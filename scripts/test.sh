#!/usr/bin/env bash
# Set up everything the tests need and run them (lint first).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
python3 -m ruff check src tests benchmarks
python3 -m pytest -q "$@"
