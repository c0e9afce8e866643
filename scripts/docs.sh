#!/usr/bin/env bash
# The documentation site (MkDocs + mkdocstrings, configured in mkdocs.yml, pages in docs/).
#   bash scripts/docs.sh            build and serve at http://127.0.0.1:8000, rebuilt on every change
#   bash scripts/docs.sh build      build into site/ with warnings as errors (what tests/test_docs.py checks)
#   bash scripts/docs.sh serve -a 0.0.0.0:8000    other arguments go to `mkdocs serve`/`mkdocs build`
# Uses the project's .venv when there is one (bash scripts/install.sh --test installs the docs tools).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -x .venv/bin/mkdocs ]]; then
  source .venv/bin/activate
fi
command -v mkdocs >/dev/null || { echo "mkdocs is not installed: bash scripts/install.sh --test" >&2; exit 2; }
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export NO_MKDOCS_2_WARNING=1
if [[ "${1:-}" == "build" ]]; then
  shift
  exec mkdocs build --strict "$@"
fi
[[ "${1:-}" == "serve" ]] && shift
exec mkdocs serve --strict "$@"
