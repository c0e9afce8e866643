"""A full-protocol AutoShrink search on Fashion-MNIST for the GPU engine benchmark, timed.

:func:`search` runs the paper's protocol (N = 8, K = 10, 500 images per class, 1,000 validation
images, <= 20 epochs with the early stops) with the batched executor, logs every shrink step
(candidates, seconds so far, peak GPU memory) and stops at a time limit -- also inside a step,
after a candidate -- so that a slow engine cannot overrun a GPU session. The run folder can be
resumed with ``autoshrink search --resume``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from autoshrink.config import SearchConfig
from autoshrink.executors.batched import BatchedExecutor
from autoshrink.journal import Journal
from autoshrink.presets import preset
from autoshrink.search import run_search


class Deadline(Exception):
    """The search ran past ``--time-limit``."""


class TimedExecutor:
    """Wraps the batched executor: logs every shrink step, stops the search at a deadline."""

    def __init__(
        self, inner: BatchedExecutor, limit: float | None, say: Callable[[str], None]
    ) -> None:
        self.inner, self.say = inner, say
        self.t0 = time.perf_counter()
        self.limit = limit
        self.steps = self.candidates = 0

    def _check(self) -> None:
        if self.limit is not None and time.perf_counter() - self.t0 > self.limit:
            raise Deadline

    def run(self, evaluator, jobs, on_retry=None):
        self._check()
        for done in self.inner.run(evaluator, jobs, on_retry):
            yield done
            self.candidates += 1
            self._check()  # also inside a step: a slow engine must not overrun the limit
        self.steps += 1
        self.say(
            f"  step {self.steps}: {len(jobs)} candidates, "
            f"{time.perf_counter() - self.t0:.1f} s so far, peak GPU memory {peak_gb()}"
        )

    def close(self) -> None:
        self.inner.close()


def best_so_far(run_dir: Path) -> float | None:
    """The best score in a stopped run's journal: the best cell of the trajectory so far (each
    step keeps its best candidate), None before the first score."""
    path = run_dir / "journal.jsonl"
    records = Journal(path).records() if path.exists() else []
    scores = [
        r["score"] for r in records if r.get("type") == "candidate" and r.get("score") is not None
    ]
    return max(scores, default=None)


def peak_gb() -> str:
    if not torch.cuda.is_available():
        return "n/a"
    return f"{torch.cuda.max_memory_allocated() / 1e9:.2f} GB"


def search(
    data_dir: Path,
    device: str,
    options: dict[str, bool],
    *,
    quick: bool = False,
    out: Path | None = None,
    time_limit: float | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The full-protocol search (or a tiny one with ``quick``) on Fashion-MNIST in ``data_dir``
    with the batched executor (``options``: its engine options), stopped after ``time_limit``
    seconds; what it did, as a JSON-ready dict."""
    data = {"dataset": "fashion-mnist", "data_dir": str(data_dir), "device": device}
    config = preset("paper", **data)  # the paper's protocol (method §2-§4)
    if quick:  # a 4-node cell, 2 steps of K = 2, a few images, one epoch
        tiny = {"nodes": 4, "k": 2, "keep_fraction": 0.7, "per_class": 10, "val_size": 50}
        config = preset(
            "paper", **data, **tiny, width=0.5, training_epochs=1, training_batch_size=32
        )
    out = out or Path(tempfile.mkdtemp(prefix="autoshrink-bench-"))
    return timed_search(out, config, options, time_limit, say)


def timed_search(
    out: Path,
    config: SearchConfig,
    options: dict[str, Any],
    time_limit: float | None,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Run ``config`` into ``out`` with the batched executor (``options``: its engine options),
    every step logged, stopped after ``time_limit`` seconds; what it did, as a JSON-ready dict
    (``best_score``: of the trajectory so far where the search was stopped)."""
    if torch.cuda.is_available() and config.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    executor = TimedExecutor(BatchedExecutor(**options), time_limit, say)
    t0 = time.perf_counter()
    finished, best = True, None
    try:
        best = run_search(out, config, executor=executor, progress=False).best.score
    except Deadline:
        finished, best = False, best_so_far(out)
    return {
        "finished": finished,
        "seconds": round(time.perf_counter() - t0, 2),
        "steps": executor.steps,
        "candidates": executor.candidates,
        "best_score": best,
        "peak_gpu_memory": peak_gb(),
        "run_dir": str(out),
    }
