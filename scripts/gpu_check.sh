#!/usr/bin/env bash
# The whole GPU check of the batched engine (issues #6, #17, #21) in one go; the default parts
# took about 12 minutes on an H200 (below), more than one 600 s call of a device tool allows:
#   1. the device and software versions;
#   2. float64 equivalence with one-by-one training on the GPU (PASS/FAIL) of the engine: as it
#      is (depthwise 3x3 through Triton's kernels where Triton is installed), replayed from CUDA
#      graphs, with PyTorch's and with cuDNN's depthwise kernels;
#   3. the engine's own ops (1x1 convolutions, depthwise 3x3 on each backend, stem) against
#      the plain PyTorch they replace, forward + backward, with the set-up new shapes cost
#      (3x32x32, 1x28x28);
#   4. the throughput table, eager loop vs batched engine (K = 10, batch 128, 3x32x32 images,
#      best of 3 timed epochs each), float32 (on a GPU its matmuls on TF32 tensor cores, as
#      the eager loop's cuDNN convolutions), then a profile of the engine step (which operators
#      take the device time); every table also times the set-up of a new number of stacked
#      candidates (the first epoch with K - 1 beyond the next); on a GPU the same table with
#      batch norm and activation fused in Triton (--bn triton: the fusion against the default) and
#      with node inputs concatenated (--node-inputs concat: before/after of the node-input
#      buffer);
#      Before the tables, node inputs as views of one buffer against concatenated copies, a
#      training step's forward + backward (`node-input buffer speedup:`);
#      Then the bytes a training step moves, op by op, against the time each op takes on the
#      device: the bandwidth each reaches (benchmarks/bench_engine_ops.py --device; SKIP bytes);
#   5. the same under bf16 autocast (on a GPU: replayed from CUDA graphs);
#   6. the float32 table on Fashion-MNIST's geometry, 1x28x28 (what the search trains);
#   7. a full-protocol AutoShrink search on Fashion-MNIST with the batched executor as
#      `autoshrink search --device cuda` runs it (wall time, peak GPU memory, every engine epoch
#      logged), stopped after $SEARCH_SECONDS (230) s if it has not finished (0: skipped);
#   8. with SMOKE=1 (GPU only): smoke runs of two other CUDA paths, measured latency and bf16
#      final training;
#   9. ShrinkRNN (issue #21): float64 equivalence of the stacked RNN candidates with one-by-one
#      training on the device (PASS/FAIL), the throughput of the K = 10 candidates of a 6-node
#      step stacked vs one by one in the same run (`rnn speedup:`), then the paper-protocol
#      ShrinkRNN search (N = 6, K = 10, 4,000/300 lines, nhid 100) with the stacked executor,
#      timed (target <= 3 minutes), stopped after $RNN_SECONDS (200) s; on a GPU all three also
#      with the windows replayed from CUDA graphs (`rnn graph speedup:`; one candidate alone, plain
#      loop against a stack of one in graphs: `rnn single speedup:`; the search with them only);
#      text: the PTB proxy split from $PTB_DIR, data/ptb/proxy or ../shared/data/ptb/proxy, else
#      synthetic text of the same size (timing only; the output says which);
#  10. final training (issue #21): ShrinkCNN-A and MobileNetV2-1.4, same recipe and epochs
#      ($FINAL_EPOCHS, 2; bf16 on a GPU), Fashion-MNIST at 32x32: images/s, peak GPU memory, test
#      accuracy; then `autoshrink train` killed after its first epoch and resumed with --resume
#      against the uninterrupted run (PASS/FAIL).
#  11. with PARTS including "oneshot" (issue #17; not in the default): one-shot fine-tuning of a
#      step's K = 10 candidates from their parent's weights, one by one against stacked on the
#      batched engine, in the same run (`oneshot speedup:`), and the float64 check (PASS/FAIL).
#  12. with PARTS including "next" (not in the default): what docs/gpu.md lists as the next GPU
#      run, in one call: the float32 throughput table again (unless part cnn ran it: the
#      figures before 2026-12-05 timed the engine's set-up on its side), the bandwidth each op
#      of an engine step reaches, in float32 and bf16
#      (benchmarks/bench_engine_ops.py --device); step 1 of the full-protocol search as a stack
#      of one in CUDA graphs against the plain loop on the same machine (two searches stopped
#      after 45 s: `step 1 A/B:`); and, unless COMPILE=0, the throughput table with the engine
#      compiled by torch.compile (--compile). Not yet run on a GPU; worst case (every step at
#      its timeout) 13.3 minutes, 8.3 with COMPILE=0: run it with BUDGET_S under the call's limit.
# BUDGET_S (default 0: none) caps the whole script: each step's time limit is cut to what is
# left of it less 30 s for the summary, and a step with under 10 s left is skipped. The device
# tool returns at most 8 files from $OUT and a call may run 600 s, so run it as
#   rm -rf /tmp/gn; BUDGET_S=560 PARTS=next OUT=/tmp/gn bash scripts/gpu_check.sh data/fashion-mnist;
#   tar czf "$OUT/gn.tgz" -C /tmp gn
# SKIP leaves out steps of part cnn already measured: any of
# "check ops node_inputs bytes fused concat bf16 gray"
# (default none), so that a rerun of what changed fits beside part rnn in one budget.
# PARTS selects the parts (default "cnn rnn final": steps 2-8, 9, 10). Measured on an H200:
# steps 1-8 4.8 min (session 5); PARTS="rnn final" 456 s, PARTS="cnn oneshot" with
# SEARCH_SECONDS=0 314 s (session 30): those two calls back to back on a warm machine fit one
# 15-minute budget with the machine's start, without room for a rerun.
# Measured: 4.8 minutes on an H200 with the search finished in 122 s (session 5, run B).
# Tables time the engine's defaults unless DEPTHWISE names other depthwise kernels (auto,
# triton, torch, cudnn). Worst case (every step at its timeout, on a GPU): part cnn 13.3
# minutes, rnn 6.7, final 5, oneshot 2.5, next 13.3 (8.3 with COMPILE=0); the default parts
# 24.9 minutes, plus the machine's start. Through a tool whose calls may run 600 s, set
# BUDGET_S (560) or split the parts into calls.
# No package installs; PYTHONPATH=src; python3, or $PYTHON. Results go to $OUT (default:
# /tmp/gpu_check). DEVICE=cpu QUICK=1 runs the same steps on the CPU with tiny settings (a smoke
# test; step 8 is skipped there).
#
# Fashion-MNIST: the four IDX files (.gz or raw) in the folder given as $1, or $FASHION_MNIST_DIR,
# or data/fashion-mnist, ../shared/data/fashion-mnist, /usr/share/datasets/fashion-mnist. A GPU
# machine may have none of these: copy the files into data/fashion-mnist/ of the working tree
# first (about 30 MB; scripts/stage_gpu_data.sh copies them and the PTB proxy split); data/
# is git-ignored, so a copy of the working tree must carry it explicitly.
#
#   OUT=/some/dir bash scripts/gpu_check.sh [FASHION_MNIST_DIR]
#
# $OUT must be empty or new: its searches refuse a folder that holds an earlier one, so a
# rerun into it would lose them (rm -rf it first, or name another).
set -uo pipefail
case "$#:${1:-}" in
  1:-h | 1:--help) sed -n '2,/^set -uo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
  0: | 1: | 1:[!-]*) ;;
  *) echo "gpu_check.sh: unknown arguments: $* (usage: OUT=DIR bash scripts/gpu_check.sh" \
       "[FASHION_MNIST_DIR]; --help says more)" >&2; exit 2 ;;
esac
exec 3>&1  # the console: a step's skip is said there (once), wherever the step's output goes
# Relative folders given (OUT, the data folder, PTB_DIR) are taken from where the script is
# run; the script then works in the working tree (data/..., src).
given() { case $1 in "" | /*) printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }
OUT=$(given "${OUT:-}")
GIVEN_DATA=$(given "${1:-${FASHION_MNIST_DIR:-}}")
PTB_DIR=$(given "${PTB_DIR:-}")
if [ -n "$GIVEN_DATA" ] && ! [ -e "$GIVEN_DATA/train-images-idx3-ubyte.gz" ] && \
    ! [ -e "$GIVEN_DATA/train-images-idx3-ubyte" ]; then  # else its searches fail steps later
    echo "gpu_check.sh: $GIVEN_DATA: no train-images-idx3-ubyte(.gz); expected a Fashion-MNIST" \
        "folder (scripts/stage_gpu_data.sh)" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/gpu_check}"
DEVICE="${DEVICE:-cuda}"
PY="${PYTHON:-python3}"
EXTRA=()
[ -n "${QUICK:-}" ] && EXTRA=(--quick)
GPU=""
[ "$DEVICE" != "cpu" ] && GPU=1
# Step time limits are set for a GPU; a CPU smoke run (slower, maybe on a busy box) gets 4x.
SCALE="${TIMEOUT_SCALE:-$([ -n "$GPU" ] && echo 1 || echo 4)}"
SMOKE="${SMOKE:-}"
if ! [[ "${BUDGET_S:-0}" =~ ^[0-9]+$ ]]; then
    echo "gpu_check.sh: BUDGET_S must be a whole number of seconds, got '$BUDGET_S'" >&2
    exit 2
fi
SEARCH_SECONDS="${SEARCH_SECONDS:-230}"
RNN_SECONDS="${RNN_SECONDS:-200}"
FINAL_EPOCHS="${FINAL_EPOCHS:-2}"
PARTS=" ${PARTS:-cnn rnn final} "
DEPTHWISE=(--depthwise "${DEPTHWISE:-auto}")
if [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
    echo "gpu_check.sh: OUT=$OUT holds an earlier run's files; its searches would refuse" \
        "their folders: remove it, or name an empty or new folder" >&2
    exit 2
fi
mkdir -p "$OUT"
BENCH=benchmarks/bench_gpu_engine.py

DATA="$GIVEN_DATA"
if [ -z "$DATA" ]; then
    for d in data/fashion-mnist ../shared/data/fashion-mnist /usr/share/datasets/fashion-mnist; do
        if [ -e "$d/train-images-idx3-ubyte.gz" ] || [ -e "$d/train-images-idx3-ubyte" ]; then
            DATA="$d"
            break
        fi
    done
fi

PTB="$PTB_DIR"
if [ -z "$PTB" ]; then
    for d in data/ptb/proxy ../shared/data/ptb/proxy; do
        [ -e "$d/train.txt" ] && PTB="$d" && break
    done
fi

step() { echo; echo "== $* ($(date +%T))"; }
# limited SECONDS COMMAND...: `timeout SECONDS COMMAND...`, cut to what BUDGET_S (seconds for
# the whole script, 0: no budget) leaves, less 30 s kept for the summary; a step with under
# 10 s left is skipped (status 124, as a timeout); both said on the console.
limited() {
    local want=$1
    shift
    if [ "${BUDGET_S:-0}" -gt 0 ]; then
        local left=$((BUDGET_S - SECONDS - 30))
        if [ "$left" -lt 10 ]; then
            echo "== skipped: the budget of $BUDGET_S s is spent (BUDGET_S)" >&3
            return 124
        fi
        if [ "$left" -lt "$want" ]; then
            echo "== cut from $want s to $left s by the budget (BUDGET_S)" >&3
            want=$left
        fi
    fi
    timeout "$want" "$@"
}
part() { [[ "$PARTS" == *" $1 "* ]]; }
SKIP=" ${SKIP:-} "
run_step() { [[ "$SKIP" != *" $1 "* ]] || { step "$1 skipped (SKIP)"; false; }; }
BYTES_FP32=""  # set once part cnn has measured each op's float32 bandwidth (part next reuses it)

engine_bytes() {  # engine_bytes fp32|bf16: each op's bandwidth, in engine_bytes_PRECISION.txt
    local precision=$1 bf16=()
    [ "$precision" = bf16 ] && bf16=(--bf16)
    limited $((90 * SCALE)) "$PY" benchmarks/bench_engine_ops.py --device "$DEVICE" "${EXTRA[@]}" \
        "${bf16[@]}" > "$OUT/engine_bytes_$precision.txt" 2>&1
    grep -v "^USDT" "$OUT/engine_bytes_$precision.txt"
}

table() {  # table SECONDS NAME [bench options...]: one throughput table, its JSON in NAME.json
    local seconds=$1 name=$2
    shift 2
    limited $((seconds * SCALE)) "$PY" "$BENCH" --device "$DEVICE" "${EXTRA[@]}" "${DEPTHWISE[@]}" \
        --json "$@" \
        > "$OUT/$name.json" 2> "$OUT/$name.txt"
    cat "$OUT/$name.txt"
}

step "device"
if [ -n "$GPU" ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
torch.cuda.get_device_name())"
else
    "$PY" -c "import platform, torch; print('torch', torch.__version__, 'cpu', \
platform.processor() or platform.machine())"
fi 2>&1 | tee "$OUT/device.txt"

if part cnn; then
if run_step check; then
step "float64 equivalence on the GPU"
limited $((45 * SCALE)) "$PY" "$BENCH" --device "$DEVICE" --check 2>&1 | tee "$OUT/check.txt"
fi

if run_step ops; then
step "the engine's own ops against the plain PyTorch they replace"
for geometry in "3 32" "1 28"; do
    read -r channels size <<< "$geometry"
    limited $((25 * SCALE)) "$PY" benchmarks/bench_stacked_ops.py --device "$DEVICE" "${EXTRA[@]}" --json \
        --in-channels "$channels" --image-size "$size" > "$OUT/ops_${channels}x$size.json"
    cat "$OUT/ops_${channels}x$size.json"
done
fi

if run_step node_inputs; then
step "node inputs: views of one buffer vs concatenated, a training step's forward + backward"
NODE=()
[ -n "${QUICK:-}" ] && NODE=(--k 3 --batch 8 --image-size 8 --rounds 1 --steps 1 --threads 1)
limited $((60 * SCALE)) "$PY" benchmarks/bench_node_inputs.py --device "$DEVICE" "${NODE[@]}" \
    --json > "$OUT/node_inputs.json" 2> "$OUT/node_inputs.txt"
cat "$OUT/node_inputs.txt"
fi

step "throughput, float32, and a profile of the engine step"
table 75 throughput_fp32 --profile
if run_step bytes; then
    step "bytes per step against each op's time on the device: the bandwidth it reaches"
    engine_bytes fp32
    BYTES_FP32=1
fi
if [ -n "$GPU" ]; then
    if run_step fused; then
        step "throughput, float32, batch norm and activation fused in Triton (--bn triton)"
        table 50 throughput_fp32_fused --bn triton
    fi
    if run_step concat; then
        step "throughput, float32, node inputs concatenated (the node-input buffer's baseline)"
        table 50 throughput_fp32_concat --node-inputs concat
    fi
fi
if ! run_step bf16; then
    :
elif [ -n "$GPU" ]; then
    step "throughput, bf16 autocast, engine steps replayed from CUDA graphs"
    table 50 throughput_bf16 --precision bf16 --cuda-graph
else
    step "throughput, bf16 autocast"
    table 60 throughput_bf16 --precision bf16
fi
if run_step gray; then
    step "throughput, float32, Fashion-MNIST's geometry (1x28x28)"
    table 50 throughput_gray --in-channels 1 --image-size 28
fi

if [ "$SEARCH_SECONDS" = 0 ]; then
    step "full-protocol search skipped (SEARCH_SECONDS=0)"
elif [ -n "$DATA" ]; then
    step "full-protocol search (data: $DATA)"
    limited $((($SEARCH_SECONDS + 45) * SCALE)) "$PY" "$BENCH" --device "$DEVICE" "${EXTRA[@]}" \
        "${DEPTHWISE[@]}" --json --no-table --verbose --search-data "$DATA" \
        --out "$OUT/search" --time-limit "$SEARCH_SECONDS" \
        > "$OUT/search.json" 2> "$OUT/search.txt"
    cat "$OUT/search.txt"
else
    step "no Fashion-MNIST folder found: search skipped"
fi

if [ -n "$GPU" ] && [ -n "$SMOKE" ]; then
    step "other CUDA paths: measured latency, bf16 final training (smoke runs)"
    {
        limited $((25 * SCALE)) "$PY" -m autoshrink latency src/autoshrink/cells/shrinkcnn.json \
            --device "$DEVICE" --max-seconds 3
        limited $((35 * SCALE)) "$PY" -m autoshrink train src/autoshrink/cells/shrinkcnn.json \
            --dataset digits --no-flip --epochs 1 --precision bf16 --device "$DEVICE" \
            --out "$OUT/train_bf16"
    } 2>&1 | tail -n 40 | tee "$OUT/other_paths.txt"
fi
fi

if part rnn; then
    step "ShrinkRNN: stacked candidates vs one by one, and the paper-protocol search"
    RNN_DATA=()
    [ -n "$PTB" ] && RNN_DATA=(--data "$PTB")
    [ -n "$GPU" ] && RNN_DATA+=(--cuda-graph)
    limited $((($RNN_SECONDS + 200) * SCALE)) "$PY" benchmarks/bench_rnn_engine.py --device "$DEVICE" \
        "${EXTRA[@]}" "${RNN_DATA[@]}" --check --search --time-limit "$RNN_SECONDS" \
        --out "$OUT/rnn_search" --json > "$OUT/rnn.json" 2> "$OUT/rnn.txt"
    grep -v "not in the training vocabulary" "$OUT/rnn.txt"
fi

if part next; then
    if ! part cnn; then  # the figures before 2026-12-05 timed the engine's set-up with it
        step "throughput, float32, the engine's set-up outside the clock"
        table 75 throughput_fp32
    fi
    step "the bandwidth each op of an engine step reaches, float32 (unless part cnn did) and bf16"
    [ -n "$BYTES_FP32" ] || engine_bytes fp32
    engine_bytes bf16
    if [ -n "$DATA" ]; then
        for engine in default plain; do
            step "search step 1, $engine (stopped after 45 s; data: $DATA)"
            GRAPH=()
            [ "$engine" = plain ] && GRAPH=(--no-cuda-graph)
            limited $((120 * SCALE)) "$PY" "$BENCH" --device "$DEVICE" "${EXTRA[@]}" --json \
                --no-table --verbose --search-data "$DATA" --out "$OUT/search_$engine" \
                --time-limit 45 "${GRAPH[@]}" > "$OUT/search_$engine.json" 2> "$OUT/search_$engine.txt"
            grep "step 1:" "$OUT/search_$engine.txt" || tail -n 3 "$OUT/search_$engine.txt"
        done
    else
        step "no Fashion-MNIST folder found: step-1 A/B skipped"
    fi
    if [ "${COMPILE:-1}" != 0 ]; then
        step "throughput, float32, the engine compiled by torch.compile"
        table 300 throughput_compiled --compile
    fi
fi

if part oneshot; then
step "one-shot fine-tuning: stacked vs one by one, and float64 (issue #17)"
limited $((150 * SCALE)) "$PY" benchmarks/bench_oneshot_engine.py --device "$DEVICE" --check \
    "${EXTRA[@]}" ${DATA:+--data "$DATA"} --json > "$OUT/oneshot.json" 2> "$OUT/oneshot.txt"
cat "$OUT/oneshot.json"
fi

if part final && [ -n "$DATA" ]; then
    step "final training: ShrinkCNN-A and MobileNetV2-1.4, kill + --resume"
    FINAL=(--epochs "$FINAL_EPOCHS" --precision bf16)
    [ -n "${QUICK:-}" ] && FINAL=(--epochs 1 --limit 64 --batch-size 32 --precision fp32 \
        --no-resume --threads 1)
    limited $((300 * SCALE)) "$PY" benchmarks/bench_final_training.py --data "$DATA" --device "$DEVICE" \
        "${FINAL[@]}" --json > "$OUT/final.json" 2> "$OUT/final.txt"
    grep -v "covers the whole run" "$OUT/final.txt"
fi

step "summary"
"$PY" - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, re, sys
from pathlib import Path

out = Path(sys.argv[1])


def peak(value, unit=" GB"):
    """A peak GPU memory figure as printed: none on the CPU."""
    return "n/a (no GPU)" if value is None else f"{value}{unit}"


def result(name):
    """The JSON object a step wrote to ``out/name``, or None where it wrote nothing."""
    path = out / name
    text = path.read_text().strip() if path.exists() else ""
    return json.loads(text) if text else None


for path in sorted(out.glob("ops_*.json")):
    if r := result(path.name):
        depthwise = ", ".join(
            f"{b} {r[f'depthwise_{b}_first_ms']:.0f} then {r[f'depthwise_{b}_ms']:.1f} ms"
            for b in ("cudnn", "torch", "triton") if f"depthwise_{b}_ms" in r)
        print(f"{r['device']} {r['precision']} ops {path.stem[4:]}: pointwise "
              f"{r['composed_pointwise_ms']:.1f} -> {r['engine_pointwise_ms']:.1f} ms "
              f"({r['pointwise_speedup']:.2f}x); depthwise of a step, first call on new shapes "
              f"then best: {depthwise}; stem conv {r['stem_conv_ms']:.2f} ms, im2col "
              f"{r['stem_im2col_ms']:.2f} ms")
rows = []  # for a ready-to-paste markdown table at the end
first = None
for name in ("throughput_fp32", "throughput_fp32_fused", "throughput_fp32_concat",
             "throughput_bf16", "throughput_gray", "throughput_compiled", "search"):
    path = out / f"{name}.json"
    if not path.exists():
        continue  # a step this device skips
    text = path.read_text().strip()
    if not text:
        print(f"{name}: no result (see {name}.txt)")
        continue
    r = json.loads(text)
    tag = r["precision"] + (" cuda-graph" if r["cuda_graph"] else "")
    tag += f" {r['depthwise']} depthwise" + (" fused-bn" if r.get("bn") == "triton" else "")
    tag += f" {r['node_inputs']}-inputs" if r.get("node_inputs") else ""
    tag += " compiled" if r.get("compile") else ""
    if r["table"]:  # images other than the first table's: named in the tag
        first = first or r["images"]
        tag += "" if r["images"] == first else " " + "x".join(map(str, r["images"]))
    for row in r["table"]:
        print(f"{r['device']} {tag} {row['cell']}: eager {row['baseline_img_s']:.0f} img/s, "
              f"engine {row['engine_img_s']:.0f} img/s, speedup: {row['ratio']:.2f}, "
              f"engine peak {peak(row['engine_peak_gpu_gb'])}")
        rows.append(f"| {r['device']} | {tag} | {row['cell']} | {row['baseline_img_s']:,.0f} | "
                    f"{row['engine_img_s']:,.0f} | {row['ratio']:.2f} | {row['engine_peak_gpu_gb']} | "
                    f"{row['new_shape_s']} |")
    if r.get("search"):
        s = r["search"]
        print(f"full-protocol search ({tag} engine): finished={s['finished']}, "
              f"{s['seconds']:.0f} s, {s['steps']} steps, {s['candidates']} candidates, "
              f"peak {peak(s['peak_gpu_memory'], '')}")

step1 = {}
for engine in ("default", "plain"):
    path = out / f"search_{engine}.txt"
    found = re.search(r"step 1: \d+ candidates, ([\d.]+) s so far", path.read_text()) if (
        path.exists()) else None
    if found:
        step1[engine] = float(found.group(1))
if step1:
    print("step 1 A/B, full-protocol search on one machine: "
          + ", ".join(f"{e} {t:.1f} s" for e, t in step1.items())
          + " (default: a stack of one in CUDA graphs; plain: --no-cuda-graph)")
if r := result("node_inputs.json"):
    ms, mb = r["ms_per_step"], r["saved_mb"]
    print(f"{r['device']} {r['precision']} node inputs, K = {r['k']}: concat {ms['concat']} ms, "
          f"buffer {ms['buffer']} ms per step; saved for backward {mb['concat']} -> "
          f"{mb['buffer']} MB; node-input buffer speedup: {r['speedup']:.2f}")
if r := result("rnn.json"):
    print(f"{r['device']} RNN check: {'PASS' if r.get('check') else 'FAIL'}; "
          f"K = {r['k']} ({r['data']}): one by one {r['one_by_one_tokens_s']:,.0f}, stacked "
          f"{r['stacked_tokens_s']:,.0f} candidate-tokens/s, rnn speedup: {r['speedup']:.2f}")
    if "cuda_graph_error" in r:
        print(f"{r['device']} RNN in CUDA graphs: FAIL, {r['cuda_graph_error']}")
    if "graph_speedup" in r:
        print(f"{r['device']} RNN in CUDA graphs: check "
              f"{'PASS' if r.get('check_cuda_graph') else 'FAIL'}; stacked "
              f"{r['graphed_tokens_s']:,.0f} candidate-tokens/s, "
              f"rnn graph speedup: {r['graph_speedup']:.2f}")
    if "single_speedup" in r:
        print(f"{r['device']} RNN, one candidate: plain loop {r['single_plain_s']:.2f} s, a stack "
              f"of one in CUDA graphs {r['single_graphed_s']:.2f} s per epoch, "
              f"rnn single speedup: {r['single_speedup']:.2f}")
    if r.get("search"):
        s = r["search"]
        print(f"RNN paper-protocol search (stacked{', CUDA graphs' if s.get('cuda_graph') else ''}): "
              f"finished={s['finished']}, "
              f"{s['seconds']:.0f} s, {s['steps']} steps, {s['candidates']} candidates, "
              f"peak {peak(s['peak_gpu_memory'], '')}")
if r := result("oneshot.json"):
    print(f"{r['device']} one-shot check: {'PASS' if r.get('check') else 'FAIL'}; K = {r['k']} "
          f"({r['data']}): one by one {r['one_by_one_images_s']:,.0f}, stacked "
          f"{r['stacked_images_s']:,.0f} candidate-images/s, oneshot speedup: {r['speedup']:.2f}")
if r := result("final.json"):
    for n in r.get("networks", []):
        print(f"{r['device']} final training {n['network']} ({r['epochs']} epochs, "
              f"{r['precision']}): {n['images_s']:,.0f} img/s, peak {peak(n['peak_gpu_gb'])}, "
              f"test accuracy {n['test_accuracy']:.4f}")
    if r.get("resume"):
        v = r["resume"]
        print(f"kill + --resume: {'PASS' if v['pass'] else 'FAIL'} (test accuracy "
              f"{v['test_accuracy'][0]:.4f} / {v['test_accuracy'][1]:.4f}, largest history "
              f"difference {v['max_history_difference']:.3g})")
if rows:
    print()
    print("| device | engine | cell | eager img/s | engine img/s | speedup | engine peak GB "
          "| new K set-up s |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
EOF
