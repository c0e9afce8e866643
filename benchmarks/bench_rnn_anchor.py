"""An outside anchor for the RNN search: the found cell vs the released ShrinkRNN vs nn.LSTM.

Trains three language models with the same proxy recipe (method §4 by default: the first
4,000 / 300 lines of PTB, emsize = nhid = 100, tied weights, SGD lr 20, batch 128, BPTT 35,
clip 0.25, <= 10 epochs, lr ÷10 after epochs 7 and 9, patience 4) and the same hidden size:

- the cell a search found (``--cell``, e.g. ``runs/rnn/best_cell.json``);
- the released ShrinkRNN cell (method §7);
- PyTorch's own one-layer ``nn.LSTM`` in the same embedding/decoder frame.

Prints one table of the best proxy validation perplexity (mean over ``--seeds``) and the
parameter count of each, plus the RNN score of the two cells. Models train side by side in
single-thread worker processes (``--workers``, default one per core).

    python benchmarks/bench_rnn_anchor.py --cell /tmp/rnn/best_cell.json \\
        --data ../shared/data/ptb/proxy
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import torch

from autoshrink.cost.rnn import count_rnn, edge_cost, rnn_proxy
from autoshrink.data.text import Corpus, load_text
from autoshrink.graph import Cell
from autoshrink.nn.rnn import LSTMModel, RNNModel
from autoshrink.objectives import Score
from autoshrink.presets import RNN_PRESETS
from autoshrink.spaces.cells import published_cell
from autoshrink.training.language import train_proxy_lm
from autoshrink.training.proxy_settings import RNNProxyTraining
from machine import print_machine, run_main

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/ptb/proxy"


def train_one(
    name: str, cell: Cell | None, corpus: Corpus, settings: RNNProxyTraining, seed: int
) -> dict:
    """Train one model from ``seed``; its best validation perplexity, params and time."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    n = settings.nhid
    if cell is None:
        model = LSTMModel(corpus.ntokens, emsize=n, nhid=n)
    else:
        model = RNNModel(cell, corpus.ntokens, emsize=n, nhid=n)
    t0 = time.perf_counter()
    out = train_proxy_lm(model, corpus.train, corpus.valid, settings)
    return {
        "model": name,
        "seed": seed,
        "perplexity": out.best_perplexity,
        "epochs": out.epochs,
        "stop": out.stop_reason,
        "params": sum(p.numel() for p in model.parameters()),
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cell", type=Path, required=True, help="the found cell (best_cell.json)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="PTB-style folder")
    p.add_argument("--preset", choices=sorted(RNN_PRESETS), default="paper", help="proxy recipe")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = p.parse_args()
    info = print_machine()

    settings = RNN_PRESETS[args.preset].training
    if args.epochs is not None:
        settings = replace(settings, epochs=args.epochs)
    corpus = load_text(
        args.data, train_lines=settings.train_lines, valid_lines=settings.valid_lines
    )
    found = Cell.load(args.cell)
    models: list[tuple[str, Cell | None]] = [
        ("found cell", found),
        ("ShrinkRNN (released)", published_cell("shrinkrnn")),
        ("nn.LSTM", None),
    ]
    spec = rnn_proxy(vocab=corpus.ntokens, nhid=settings.nhid)
    for _, cell in models:  # the counting convention matches the built modules
        if cell is not None:
            built = RNNModel(cell, corpus.ntokens, emsize=spec.nhid, nhid=spec.nhid)
            assert count_rnn(cell, spec).params == sum(q.numel() for q in built.parameters())

    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=ctx) as pool:
        futures = [
            pool.submit(train_one, name, cell, corpus, settings, seed)
            for name, cell in models
            for seed in args.seeds
        ]
        rows = [f.result() for f in futures]
    wall = time.perf_counter() - t0

    score = Score.rnn()
    print(
        f"proxy: {args.preset} recipe, {len(corpus.train):,} training tokens, "
        f"vocabulary {corpus.ntokens:,}, nhid = emsize = {settings.nhid}, "
        f"<= {settings.epochs} epochs, seeds {args.seeds}; wall {wall:.0f} s"
    )
    print("| model | edges | params | proxy val ppl | score | epochs | s/run |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, cell in models:
        mine = [r for r in rows if r["model"] == name]
        ppls = [r["perplexity"] for r in mine]
        ppl = statistics.fmean(ppls)
        spread = f" ± {statistics.stdev(ppls):.1f}" if len(ppls) > 1 else ""
        edges = "-" if cell is None else str(cell.num_edges)
        sc = "-"
        if cell is not None:
            sc = f"{score({'perplexity': ppl, 'edge_cost': edge_cost(cell, settings.nhid)}):.2f}"
        epochs = "/".join(str(r["epochs"]) for r in mine)
        secs = statistics.fmean(r["seconds"] for r in mine)
        print(
            f"| {name} | {edges} | {mine[0]['params']:,} | {ppl:.1f}{spread} | {sc} | "
            f"{epochs} | {secs:.0f} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    run_main(main)
