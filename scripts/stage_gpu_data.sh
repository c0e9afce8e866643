#!/usr/bin/env bash
# Copy the data that scripts/gpu_check.sh reads into data/ of this working tree, where a copy of
# the tree sent to a GPU machine can carry it (data/ is git-ignored, so it travels only when
# carried explicitly, e.g. the device tool's carry: ["data"]):
#   data/fashion-mnist/  the four Fashion-MNIST IDX files (.gz), about 30 MB;
#   data/ptb/proxy/      the PTB proxy split (train/valid/test.txt), about 0.5 MB.
# Sources: $1 (or $FASHION_MNIST_DIR, default /usr/share/datasets/fashion-mnist) and $2 (or
# $PTB_PROXY_DIR, default ../shared/data/ptb/proxy). A missing source is named on one line and
# the script exits with status 2 before copying anything. $DEST replaces data/ (tests). Relative
# folders given (arguments, $FASHION_MNIST_DIR, $PTB_PROXY_DIR, $DEST) are taken from where the
# script is run; the defaults from the working tree.
#
#   bash scripts/stage_gpu_data.sh [FASHION_MNIST_DIR] [PTB_PROXY_DIR]
set -euo pipefail
usage="usage: bash scripts/stage_gpu_data.sh [FASHION_MNIST_DIR] [PTB_PROXY_DIR]"
case "$#:${1:-}:${2:-}" in
  1:-h: | 1:--help:) echo "$usage"; exit 0 ;;
  0:: | 1:[!-]*: | 2:[!-]*:[!-]*) ;;
  *) echo "stage_gpu_data: unknown arguments: $*" >&2; echo "$usage" >&2; exit 2 ;;
esac
given() { case $1 in "" | /*) printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }
FASHION=$(given "${1:-${FASHION_MNIST_DIR:-}}")
PTB=$(given "${2:-${PTB_PROXY_DIR:-}}")
DEST=$(given "${DEST:-}")
cd "$(dirname "$0")/.."
FASHION="${FASHION:-/usr/share/datasets/fashion-mnist}"
PTB="${PTB:-../shared/data/ptb/proxy}"
DEST="${DEST:-data}"
IDX=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
fashion_files=()
for name in "${IDX[@]}"; do
    found=""
    for f in "$FASHION/$name.gz" "$FASHION/$name"; do
        [ -f "$f" ] && { found="$f"; break; }
    done
    if [ -z "$found" ]; then
        echo "stage_gpu_data: $FASHION: no $name(.gz) (Fashion-MNIST: apt install dataset-fashion-mnist)" >&2
        exit 2
    fi
    fashion_files+=("$found")
done
for name in train.txt valid.txt test.txt; do
    if [ ! -f "$PTB/$name" ]; then
        echo "stage_gpu_data: $PTB: no $name (the PTB proxy split)" >&2
        exit 2
    fi
done
mkdir -p "$DEST/fashion-mnist" "$DEST/ptb/proxy"
cp -f "${fashion_files[@]}" "$DEST/fashion-mnist/"
cp -f "$PTB/train.txt" "$PTB/valid.txt" "$PTB/test.txt" "$DEST/ptb/proxy/"
chmod -R u+w "$DEST/fashion-mnist" "$DEST/ptb/proxy"  # read-only sources stay replaceable
du -sh "$DEST/fashion-mnist" "$DEST/ptb/proxy"
