"""Stacked RNN candidates against the one-by-one loop, in the same run; and the timed RNN search.

Takes the K single-edge removals of the complete N-node RNN cell (a shrink step's candidates,
N = 6 and K = 10 as the paper's protocol) and trains them for one proxy epoch (method
§4: nhid 100, batch 128, BPTT 35, SGD lr 20, clip 0.25) twice: one after the other with
``train_epoch`` (the one-by-one loop of ``autoshrink search --executor inprocess``) and all
together with ``StackedTrainer`` (the ``batched`` executor). It prints both throughputs
in candidate-tokens/s (K × training tokens / seconds), the system CPU time and page faults of
each timed epoch, and ``rnn speedup: X``. With ``--cuda-graph`` (CUDA only) the stacked epoch
is timed a second time with its windows replayed from CUDA graphs (``rnn graph speedup: X``,
against the one-by-one loop of the same run), and so is one candidate alone, plain loop against
a stack of one in CUDA graphs (``rnn single speedup: X``: what step 0's complete cell gains
from ``StackedRNNEvaluator.stacks_single``). The first
epoch of each is a warm-up; then the best of ``--repeats`` timed epochs counts.

``--check`` first trains K = 3 candidates for 2 epochs in float64 both ways on the device and
prints PASS/FAIL (same stop reasons, perplexities within 1e-9); with ``--cuda-graph`` also
the stacked candidates replayed from CUDA graphs. ``--search`` then runs the
paper-protocol ShrinkRNN search (N = 6, K = 10, 4,000/300 lines, nhid 100, <= 10 epochs) with
the stacked executor (with ``--cuda-graph``: replaying CUDA graphs), timed, stopped after
``--time-limit`` seconds. Where CUDA graphs fail, the error is reported (``cuda_graph_error``,
exit status 1) and the rest runs without them, so that one GPU session still gets the eager
figures and the search.

Text: a PTB-style folder (``--data``, train/valid/test.txt; e.g. the PTB proxy split), else
a synthetic Zipf-distributed corpus of the same size (4,000/300 lines of ~21 words, 10,000
words; timing only -- say which in the report).

    python benchmarks/bench_rnn_engine.py --device cuda --data data/ptb/proxy [--search]
    python benchmarks/bench_rnn_engine.py --device cpu --train-lines 400 --k 10   # CPU figure
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autoshrink.data.text import Corpus, batchify, load_text
from autoshrink.devices import local_device_argument
from autoshrink.nn.rnn import RNNModel
from autoshrink.nn.stacked_rnn import build_stacked_rnn
from autoshrink.presets import preset
from autoshrink.spaces.cells import start_cell
from autoshrink.training.batched import tf32_matmuls
from autoshrink.training.language import train_epoch, train_proxy_lm
from autoshrink.training.proxy_settings import RNNProxyTraining
from autoshrink.training.stacked_language import StackedTrainer, train_stacked_lm
from engine_search import timed_search
from machine import count, print_machine, run_main


def synthetic_corpus(root: Path, train_lines: int, valid_lines: int, vocab: int = 10_000) -> Path:
    """A PTB-shaped folder of Zipf-distributed words (timing only: nothing to learn but the
    unigram distribution)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    ranks = np.arange(1, vocab + 1)
    p = (1.0 / ranks) / (1.0 / ranks).sum()
    for name, n in (("train", train_lines), ("valid", valid_lines), ("test", valid_lines)):
        lengths = rng.poisson(21, n) + 1
        words = rng.choice(vocab, size=int(lengths.sum()), p=p)
        lines, i = [], 0
        for m in lengths:
            lines.append(" ".join(f"w{w}" for w in words[i : i + m]))
            i += m
        (root / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return root


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def candidates(nodes: int, k: int) -> list:
    parent = start_cell("rnn", nodes, random.Random(0))
    return [parent.remove_edge(e) for e in parent.edges[:k]]


def one_by_one_seconds(
    cells, corpus: Corpus, s: RNNProxyTraining, device: str, tf32: bool
) -> float:
    """Seconds of one training epoch of every candidate, one after the other (TF32 matmuls
    on CUDA with ``tf32``, as the stacked side)."""
    data = torch.from_numpy(batchify(corpus.train, s.batch_size)).to(device)
    total = 0.0
    for seed, cell in enumerate(cells):
        torch.manual_seed(seed)
        model = RNNModel(cell, corpus.ntokens, emsize=s.nhid, nhid=s.nhid).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=s.lr)
        sync(device)
        t0 = time.perf_counter()
        with tf32_matmuls(tf32 and device.startswith("cuda")):
            train_epoch(model, opt, data, bptt=s.bptt, clip=s.clip)
        sync(device)
        total += time.perf_counter() - t0
    return total


def with_faults(measure: Callable[[], float]) -> tuple[float, float, int]:
    """``measure()``'s seconds, with the system CPU seconds and minor page faults of this
    process meanwhile (where freed memory goes back to the kernel, faults dominate the CPU)."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    seconds = measure()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return seconds, after.ru_stime - before.ru_stime, after.ru_minflt - before.ru_minflt


def stacked_seconds(
    cells, corpus: Corpus, s: RNNProxyTraining, device: str, tf32: bool, cuda_graph: bool = False
) -> float:
    """Seconds of one training epoch of all candidates together (with ``cuda_graph``: its
    windows replayed from a CUDA graph, the capture included)."""
    data = torch.from_numpy(batchify(corpus.train, s.batch_size)).to(device)
    seeds = list(range(len(cells)))
    model = build_stacked_rnn(cells, seeds, corpus.ntokens, nhid=s.nhid).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=s.lr)
    trainer = StackedTrainer(model, opt, data, bptt=s.bptt, clip=s.clip, cuda_graph=cuda_graph)
    sync(device)
    t0 = time.perf_counter()
    with tf32_matmuls(tf32 and device.startswith("cuda")):
        trainer.epoch()
    sync(device)
    return time.perf_counter() - t0


def check(corpus: Corpus, device: str, say, cuda_graph: bool = False) -> bool:
    """K = 3 candidates, 2 epochs, float64, stacked (``cuda_graph``: replayed from CUDA
    graphs) vs one by one on ``device``."""
    s = RNNProxyTraining(nhid=16, epochs=2, batch_size=16, bptt=12, lr=5.0, eval_batch_size=8)
    cells, seeds = candidates(6, 3), [1, 2, 3]
    model = build_stacked_rnn(cells, seeds, corpus.ntokens, nhid=s.nhid).to(device).double()
    outs = dict(
        train_stacked_lm(model, corpus.train, corpus.valid, s, device=device, cuda_graph=cuda_graph)
    )
    ok = True
    for k, (cell, seed) in enumerate(zip(cells, seeds, strict=True)):
        torch.manual_seed(seed)
        ref_model = RNNModel(cell, corpus.ntokens, emsize=s.nhid, nhid=s.nhid).to(device)
        ref = train_proxy_lm(ref_model.double(), corpus.train, corpus.valid, s, device=device)
        rel = abs(outs[k].best_perplexity - ref.best_perplexity) / ref.best_perplexity
        same = outs[k].stop_reason == ref.stop_reason and rel < 1e-9
        ok &= same
        say(f"  candidate {k}: perplexity {outs[k].best_perplexity:.10g} stacked, "
            f"{ref.best_perplexity:.10g} alone (rel. diff {rel:.1e})")  # fmt: skip
    how = " in CUDA graphs" if cuda_graph else ""
    say(f"float64 stacked RNN{how} vs one by one on {device} -> {'PASS' if ok else 'FAIL'}")
    return ok


def search(
    data_dir: Path, device: str, limit: float | None, out: Path, say, quick: bool, cuda_graph: bool
) -> dict[str, Any]:
    """The paper-protocol ShrinkRNN search (or a tiny one with ``quick``) on the text in
    ``data_dir``, stacked, stopped after ``limit`` seconds (:func:`timed_search`)."""
    config = preset("paper", task="rnn", data_dir=str(data_dir), device=device)
    if quick:
        t = RNNProxyTraining(nhid=16, train_lines=200, valid_lines=40, epochs=1, batch_size=16)
        config = replace(config, nodes=4, k=2, keep_fraction=0.7, training=t)
    options = {"bf16": False, "tf32": True, "cuda_graph": cuda_graph}
    return timed_search(out, config, options, limit, say)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", type=local_device_argument)
    p.add_argument("--data", type=Path, default=None, help="PTB-style folder (default: synthetic)")
    p.add_argument("--nodes", type=int, default=6)
    p.add_argument("--k", type=count, default=10)
    p.add_argument("--nhid", type=count, default=100)
    p.add_argument("--train-lines", type=count, default=4000)
    p.add_argument("--repeats", type=count, default=1, help="timed epochs each (the best counts)")
    p.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    p.add_argument("--fp32", action="store_true", help="no TF32 matmuls on CUDA")
    p.add_argument("--quick", action="store_true", help="tiny settings (a smoke test)")
    p.add_argument("--check", action="store_true", help="float64 equivalence first")
    p.add_argument("--no-table", action="store_true", help="skip the throughput comparison")
    p.add_argument("--search", action="store_true", help="then the paper-protocol search")
    p.add_argument("--cuda-graph", action="store_true", help="also CUDA-graph replay (CUDA)")
    p.add_argument("--time-limit", type=float, default=None, help="stop the search after S s")
    p.add_argument("--out", type=Path, default=None, help="search run folder")
    p.add_argument("--json", action="store_true", help="the results as JSON on stdout")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    info = print_machine(sys.stderr if args.json else None)

    def say(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    if args.quick:
        args.k, args.nhid, args.train_lines, args.nodes = min(args.k, 3), 16, 60, 4
    tmp = Path(tempfile.mkdtemp(prefix="autoshrink-rnn-bench-"))
    report: dict[str, Any] = {}
    ok = True
    try:  # the temporary folder goes however the run ends, unless it holds the search
        data = args.data or synthetic_corpus(tmp / "text", 4000, 300)
        text = "synthetic Zipf text" if args.data is None else str(args.data)
        corpus = load_text(data, train_lines=args.train_lines, valid_lines=300)
        report |= {"machine": info, "device": args.device, "data": text, "k": args.k}
        if args.cuda_graph and not args.device.startswith("cuda"):
            p.error(f"--cuda-graph needs --device cuda, not {args.device!r}")
        graphs = args.cuda_graph  # off again after a failure: the eager figures still come

        def graph_failed(error: Exception) -> None:
            nonlocal graphs, ok
            graphs, ok = False, False
            report["check_cuda_graph"] = False
            report["cuda_graph_error"] = f"{type(error).__name__}: {error}"
            say(f"CUDA graphs failed, going on without them: {report['cuda_graph_error']}")

        if args.check:
            tiny = load_text(data, train_lines=200, valid_lines=40)
            ok = report["check"] = check(tiny, args.device, say)
            if graphs:
                try:
                    report["check_cuda_graph"] = check(tiny, args.device, say, cuda_graph=True)
                    ok &= report["check_cuda_graph"]
                except Exception as error:  # reported; the rest of the run goes on
                    graph_failed(error)
        if not args.no_table:
            s = RNNProxyTraining(nhid=args.nhid, batch_size=16 if args.quick else 128)
            cells = candidates(args.nodes, args.k)
            tokens = batchify(corpus.train, s.batch_size).size * len(cells)
            tf32 = not args.fp32
            precision = " TF32" if tf32 and args.device.startswith("cuda") else ""
            say(f"{len(cells)} candidates of the {args.nodes}-node cell, nhid {s.nhid}, "
                f"{len(corpus.train):,} training tokens ({text}), vocabulary {corpus.ntokens:,}, "
                f"{args.device}{precision}")  # fmt: skip
            one_by_one_seconds(cells[:1], corpus, s, args.device, tf32)  # warm-up
            alone, alone_sys, alone_faults = min(
                with_faults(lambda: one_by_one_seconds(cells, corpus, s, args.device, tf32))
                for _ in range(args.repeats)
            )
            stacked_seconds(cells, corpus, s, args.device, tf32)  # warm-up
            together, together_sys, together_faults = min(
                with_faults(lambda: stacked_seconds(cells, corpus, s, args.device, tf32))
                for _ in range(args.repeats)
            )
            report.update(
                one_by_one_tokens_s=tokens / alone,
                stacked_tokens_s=tokens / together,
                speedup=alone / together,
                one_by_one_s=alone,
                stacked_s=together,
                one_by_one_system_s=alone_sys,
                stacked_system_s=together_sys,
                one_by_one_page_faults=alone_faults,
                stacked_page_faults=together_faults,
            )
            say(f"one by one: {alone:.2f} s per epoch of all {len(cells)}, "
                f"{tokens / alone:,.0f} candidate-tokens/s (system {alone_sys:.1f} s, "
                f"{alone_faults:,} page faults)")  # fmt: skip
            say(f"stacked:    {together:.2f} s, {tokens / together:,.0f} candidate-tokens/s "
                f"(system {together_sys:.1f} s, {together_faults:,} page faults)")  # fmt: skip
            say(f"rnn speedup: {alone / together:.2f}")
            if graphs:
                try:
                    stacked_seconds(cells, corpus, s, args.device, tf32, cuda_graph=True)  # warm-up
                    graphed, single = (
                        min(
                            stacked_seconds(some, corpus, s, args.device, tf32, cuda_graph=True)
                            for _ in range(args.repeats)
                        )
                        for some in (cells, cells[:1])
                    )
                except Exception as error:  # reported; the rest of the run goes on
                    graph_failed(error)
            if graphs:
                single_plain = min(
                    one_by_one_seconds(cells[:1], corpus, s, args.device, tf32)
                    for _ in range(args.repeats)
                )
                report.update(
                    graphed_tokens_s=tokens / graphed,
                    graphed_s=graphed,
                    graph_speedup=alone / graphed,
                    single_plain_s=single_plain,
                    single_graphed_s=single,
                    single_speedup=single_plain / single,
                )
                say(f"stacked, CUDA graphs: {graphed:.2f} s (capture included), "
                    f"{tokens / graphed:,.0f} candidate-tokens/s")  # fmt: skip
                say(f"rnn graph speedup: {alone / graphed:.2f}")
                say(f"one candidate: plain loop {single_plain:.2f} s, a stack of one in CUDA "
                    f"graphs {single:.2f} s (capture included)")  # fmt: skip
                say(f"rnn single speedup: {single_plain / single:.2f}")
        if args.search:
            out = args.out or tmp / "search"
            how = ", CUDA graphs" if graphs else ""
            say(f"paper-protocol RNN search ({text}) with the stacked executor{how} ...")
            report["search"] = r = search(
                data, args.device, args.time_limit, out, say, args.quick, graphs
            )
            r["cuda_graph"] = graphs
            say(f"RNN search {'finished' if r['finished'] else 'stopped at the time limit'}: "
                f"{r['seconds']:.1f} s, {r['steps']} steps, {r['candidates']} candidates, "
                f"best score {r['best_score']}, peak GPU memory "
                f"{r['peak_gpu_memory']}")  # fmt: skip
        if args.json:
            print(json.dumps(report, default=lambda v: None if isinstance(v, float) and
                             not math.isfinite(v) else str(v)))  # fmt: skip
    finally:
        if args.search and args.out is None and "search" in report:
            say(f"the search's run folder (kept): {tmp / 'search'}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    run_main(main)
