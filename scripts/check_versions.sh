#!/usr/bin/env bash
# Run the test suite at an edge of what pyproject.toml allows, in a virtual environment of its
# own (.venv-oldest, .venv-newest, made once: one of another Python is refused; CI's .venv is
# not touched):
#   oldest  Python 3.10 ($PYTHON, default python3.10) with the oldest release of every
#           dependency (scripts/oldest-versions.txt)
#   newest  the newest Python ($PYTHON, default python3.13) with the newest releases
# PyPI's Linux torch is the CUDA build, so each environment downloads several GB. Arguments
# after the edge go to pytest: bash scripts/check_versions.sh oldest tests/test_graph.py
set -euo pipefail
cd "$(dirname "$0")/.."
edge=${1:-}
usage="usage: bash scripts/check_versions.sh oldest|newest [pytest arguments]"
case $edge in
  -h | --help) echo "$usage"; exit 0 ;;
  oldest) python=${PYTHON:-python3.10}; constraints=(-c scripts/oldest-versions.txt) ;;
  newest) python=${PYTHON:-python3.13}; constraints=() ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
shift
if ! "$python" -c '' 2>/dev/null; then
  echo "check_versions.sh: cannot run $python; set PYTHON to that interpreter's path" >&2
  exit 2
fi
venv=.venv-$edge
minor='import sys; print("%d.%d" % sys.version_info[:2])'
if [[ ! -x $venv/bin/python ]]; then
  "$python" -m venv "$venv"
else  # an earlier run's venv: of the Python asked for, or the suite would run on another
  have=$("$venv/bin/python" -c "$minor") wanted=$("$python" -c "$minor")
  if [[ "$have" != "$wanted" ]]; then
    echo "check_versions.sh: $venv has Python $have, not $python's $wanted; remove $venv to" \
      "make it again with $python" >&2
    exit 2
  fi
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "${constraints[@]}" -e ".[onnx,ray,test,docs]"
"$venv/bin/python" -c 'import sys, torch, numpy
print(f"Python {sys.version.split()[0]}, torch {torch.__version__}, numpy {numpy.__version__}")'
source "$venv/bin/activate"  # the scripts the tests run call python and autoshrink by name
unset PYTHON  # scripts/gpu_check.sh, which tests run, would take it for the venv's
python -m pytest -q "$@"
