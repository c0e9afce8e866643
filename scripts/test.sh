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
# The tests write only into their temporary folders: a file they leave in the checkout fails
# the run (where git is there to tell).
before=$(git status --porcelain --untracked-files=all 2>/dev/null || true)
python -m pytest -q "$@"
after=$(git status --porcelain --untracked-files=all 2>/dev/null || true)
if [[ "$after" != "$before" ]]; then
  echo "the tests changed the checkout:" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  exit 1
fi
