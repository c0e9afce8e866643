#!/usr/bin/env bash
# The whole GPU check of the batched engine (issue #6) in one go, < 8 minutes on an H100/H200:
#   1. the device and software versions;
#   2. float64 equivalence of the engine (eager, and replayed from CUDA graphs) and one-by-one
#      training on the GPU (PASS/FAIL);
#   3. the throughput table, eager loop vs batched engine (K = 10, batch 128), bf16 autocast;
#   4. a profile of the fp32 engine step (which operators take the device time);
#   5. the table in fp32 with the engine's steps replayed from CUDA graphs;
#   6. the table in fp32, then a full-protocol AutoShrink search on Fashion-MNIST with the
#      batched executor (wall time, peak GPU memory), stopped after 180 s if it has not finished.
# Worst case (every step at its timeout) 7.8 minutes plus the machine's start.
# No package installs; PYTHONPATH=src. Results go to $OUT (default: /tmp/gpu_check).
# DEVICE=cpu QUICK=1 runs the same steps on the CPU with tiny settings (a smoke test).
#
# Fashion-MNIST: the four IDX files (.gz or raw) in the folder given as $1, or $FASHION_MNIST_DIR,
# or data/fashion-mnist, ../shared/data/fashion-mnist, /usr/share/datasets/fashion-mnist. A GPU
# machine may have none of these: copy the files into data/fashion-mnist/ of the working tree
# first (about 30 MB; e.g. cp /usr/share/datasets/fashion-mnist/*.gz data/fashion-mnist/); data/
# is git-ignored, so a copy of the working tree must carry it explicitly.
#
#   OUT=/some/dir bash scripts/gpu_check.sh [FASHION_MNIST_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/gpu_check}"
DEVICE="${DEVICE:-cuda}"
EXTRA=()
[ -n "${QUICK:-}" ] && EXTRA=(--quick)
mkdir -p "$OUT"
BENCH=benchmarks/bench_gpu_engine.py

DATA="${1:-${FASHION_MNIST_DIR:-}}"
if [ -z "$DATA" ]; then
    for d in data/fashion-mnist ../shared/data/fashion-mnist /usr/share/datasets/fashion-mnist; do
        if [ -e "$d/train-images-idx3-ubyte.gz" ] || [ -e "$d/train-images-idx3-ubyte" ]; then
            DATA="$d"
            break
        fi
    done
fi

step() { echo; echo "== $* ($(date +%T))"; }

step "device"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/device.txt"

step "float64 equivalence on the GPU"
timeout 45 python "$BENCH" --device "$DEVICE" --check 2>&1 | tee "$OUT/check.txt"

step "throughput, bf16 autocast"
timeout 60 python "$BENCH" --device "$DEVICE" "${EXTRA[@]}" --bf16 --json \
    > "$OUT/throughput_bf16.json" 2> "$OUT/throughput_bf16.txt"
cat "$OUT/throughput_bf16.txt"

step "profile of the fp32 engine step (top operators by device time)"
timeout 35 python "$BENCH" --device "$DEVICE" "${EXTRA[@]}" --steps 5 --profile \
    > "$OUT/profile.txt" 2>&1
head -c 6000 "$OUT/profile.txt"

if [ "$DEVICE" != "cpu" ]; then
    step "throughput, fp32, engine steps replayed from CUDA graphs"
    timeout 60 python "$BENCH" --device "$DEVICE" "${EXTRA[@]}" --cuda-graph --json \
        > "$OUT/throughput_graph.json" 2> "$OUT/throughput_graph.txt"
    cat "$OUT/throughput_graph.txt"
fi

if [ -n "$DATA" ]; then
    step "throughput, fp32, then the full-protocol search (data: $DATA)"
    timeout 270 python "$BENCH" --device "$DEVICE" "${EXTRA[@]}" --json --search-data "$DATA" \
        --out "$OUT/search" --time-limit 180 \
        > "$OUT/throughput_fp32_search.json" 2> "$OUT/throughput_fp32_search.txt"
else
    step "throughput, fp32 (no Fashion-MNIST folder found: search skipped)"
    timeout 70 python "$BENCH" --device "$DEVICE" "${EXTRA[@]}" --json \
        > "$OUT/throughput_fp32_search.json" 2> "$OUT/throughput_fp32_search.txt"
fi
cat "$OUT/throughput_fp32_search.txt"

step "summary"
python - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
rows = []  # for a ready-to-paste markdown table at the end
for name in ("throughput_bf16.json", "throughput_graph.json", "throughput_fp32_search.json"):
    path = out / name
    if name == "throughput_graph.json" and not path.exists():
        continue  # not run on the CPU
    text = path.read_text().strip() if path.exists() else ""
    if not text:
        print(f"{name}: no result (see the .txt next to it)")
        continue
    r = json.loads(text)
    tag = ("bf16" if r["bf16"] else "fp32") + (" cuda-graph" if r.get("cuda_graph") else "")
    for row in r["table"]:
        print(f"{r['device']} {tag} {row['cell']}: eager {row['baseline_img_s']:.0f} img/s, "
              f"engine {row['engine_img_s']:.0f} img/s, speedup: {row['ratio']:.2f}, "
              f"engine peak {row['engine_peak_gpu_gb']} GB")
        rows.append(f"| {r['device']} | {tag} | {row['cell']} | {row['baseline_img_s']:,.0f} | "
                    f"{row['engine_img_s']:,.0f} | {row['ratio']:.2f} | {row['engine_peak_gpu_gb']} |")
    if r.get("search"):
        s = r["search"]
        print(f"full-protocol search: finished={s['finished']}, {s['seconds']:.0f} s, "
              f"{s['steps']} steps, {s['candidates']} candidates, peak {s['peak_gpu_memory']}")
if rows:
    print()
    print("| device | engine | cell | eager img/s | engine img/s | speedup | engine peak GB |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
EOF
