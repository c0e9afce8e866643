#!/usr/bin/env bash
# Set up everything the tests need (in .venv) and run them, lint and type check first: what CI
# runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
source .venv/bin/activate
python -m ruff check src tests benchmarks
python -m ruff format --check src tests benchmarks
python -m mypy
python -m pytest -q "$@"
