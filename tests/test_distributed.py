"""Distributed final training on the CPU: two gloo processes under torchrun follow the
one-process trajectory, a run killed mid-epoch resumes to the uninterrupted result, and only
rank 0 writes.

This file doubles as the training script the tests launch: ``python tests/test_distributed.py
ROOT OUT [--resume] [--kill-at EPOCH STEP]`` trains a small batch-norm-free network (batch
statistics are per process, so a network with batch norm cannot match across process counts)
on the ImageFolder ``ROOT`` with the cifar recipe and a weight EMA (``--batch-norm``: with batch
norm, without the EMA), through the same
:func:`train_final`, data loaders and DistributedDataParallel as ``autoshrink train``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from autoshrink.data.loaders import folder_data
from autoshrink.training.distributed import distributed, end_process
from autoshrink.training.final import train_final
from autoshrink.training.recipes import get_recipe

HERE = Path(__file__).resolve()
SHRINKCNN = HERE.parents[1] / "src/autoshrink/cells/shrinkcnn.json"
RECIPE = {"epochs": 3, "batch_size": 8, "image_size": 16, "ema_decay": 0.9}


class Small(nn.Module):
    """``[B, 3, 16, 16] -> [B, classes]``: two convolutions, no dropout, and no batch norm
    unless ``batch_norm``."""

    def __init__(self, classes: int, batch_norm: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8) if batch_norm else nn.Identity()
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.norm(self.conv1(x)))))  # [B, 8, 8, 8]
        return self.fc(x.mean(dim=(2, 3)))


def train(
    root: Path,
    out: Path,
    resume: bool = False,
    kill_at: tuple[int, int] | None = None,
    batch_norm: bool = False,
):
    """One process's part of the run (or the whole run without torchrun); ``batch_norm``: the
    network has batch norm and the recipe no EMA, and rank 1 saves the weights it evaluated."""

    def maybe_die(epoch: int, step: int) -> None:
        if (epoch, step) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    recipe = get_recipe("cifar", **{**RECIPE, **({"ema_decay": None} if batch_norm else {})})
    with distributed("cpu") as ctx:
        data = folder_data(root, recipe, seed=0)
        torch.manual_seed(0)
        model = Small(data.num_classes, batch_norm)
        result = train_final(
            model, data, recipe, ctx=ctx, seed=0, out=out, resume=resume, on_step=maybe_die
        )
        if ctx.is_main:
            (out / "result.json").write_text(json.dumps({"history": result.history}))
        if batch_norm and ctx.rank == 1:
            save_file(result.evaluated.state_dict(), str(out / "rank1.safetensors"))
    return result


def _launch(args: list[str], procs: int | None = None) -> subprocess.CompletedProcess:
    """``python ARGS`` (under torchrun with ``procs`` processes); a process that dies of a
    signal writes the Python stack of each of its threads to stderr (faulthandler)."""
    head = [sys.executable]
    if procs is not None:
        head += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    return subprocess.run(
        [*head, *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )


def _said(run: subprocess.CompletedProcess) -> str:
    """The end of what a failed run wrote to stderr, for the test's message: enough to hold
    the processes' own last words and torchrun's report of the failure (some 2,000 characters,
    which names no cause) that follows them."""
    return run.stderr[-8000:]


def _losses(history: list[dict]) -> list[float]:
    """Train loss, validation loss and accuracy of every epoch, in one flat list."""
    return [r[k] for r in history for k in ("train_loss", "test_loss", "test_accuracy")]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_training_data import write_tree

    return write_tree(tmp_path_factory.mktemp("dist") / "tree")


@pytest.fixture(scope="module")
def reference(tree: Path, tmp_path_factory: pytest.TempPathFactory):
    """The uninterrupted one-process run, in this process (one thread, as the launched ones)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("one")
        return out, train(tree, out)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_two_gloo_processes_follow_the_one_process_trajectory(tree: Path, reference, tmp_path):
    one_dir, one = reference
    run = _launch([HERE, tree, tmp_path, "--resume"], procs=2)  # nothing yet: a fresh run
    assert run.returncode == 0, _said(run)
    two = json.loads((tmp_path / "result.json").read_text())["history"]
    assert len(two) == 3
    assert _losses(two) == pytest.approx(_losses(one.history), rel=1e-4, abs=1e-6)
    a = load_file(str(one_dir / "checkpoints" / "epoch-0003.safetensors"))
    b = load_file(str(tmp_path / "checkpoints" / "epoch-0003.safetensors"))
    for key in ("model.fc.weight", "ema.fc.weight", "optim.0.momentum_buffer"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)
    # only rank 0 wrote: one log line per epoch, one checkpoint pair per kept epoch
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 3
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "epoch-0002.json",
        "epoch-0002.safetensors",
        "epoch-0003.json",
        "epoch-0003.safetensors",
    ]


@pytest.mark.slow
def test_kill_and_resume_reproduces_the_uninterrupted_run(tree: Path, reference, tmp_path):
    _, one = reference
    killed = _launch([HERE, tree, tmp_path, "--kill-at", 2, 1])  # mid-way through epoch 2
    assert killed.returncode == -signal.SIGKILL, _said(killed)
    logged = [json.loads(r) for r in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in logged] == [1]  # epoch 2 never finished
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resumed = train(tree, tmp_path, resume=True)
    finally:
        torch.set_num_threads(threads)
    assert resumed.resumed_from == 1
    assert _losses(resumed.history) == pytest.approx(_losses(one.history), rel=1e-6, abs=1e-9)
    logged = [json.loads(r) for r in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in logged] == [1, 2, 3]
    want = one.evaluated.state_dict()
    for key, got in resumed.evaluated.state_dict().items():
        torch.testing.assert_close(got, want[key], rtol=1e-6, atol=1e-8)


@pytest.mark.slow
def test_every_process_evaluates_the_weights_rank_0_saves(tree: Path, tmp_path: Path) -> None:
    """With batch norm and no EMA: each process's last step left its own running statistics,
    so the accuracy reported (every process scores its share) was not the saved weights'."""
    run = _launch([HERE, tree, tmp_path, "--batch-norm"], procs=2)
    assert run.returncode == 0, _said(run)
    saved = load_file(str(tmp_path / "checkpoints" / "epoch-0003.safetensors"))
    rank1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert "norm.running_mean" in rank1
    for key, value in rank1.items():
        assert torch.equal(value, saved[f"model.{key}"]), key


def test_a_process_says_the_error_of_its_own_gpu(cli, monkeypatch, tmp_path) -> None:
    # rank 1 of torchrun, whose GPU (its local rank's) is not there: a configuration error,
    # which only rank 0 says -- but rank 0's GPU was there, so nobody said it
    env = {"TORCHELASTIC_RUN_ID": "x", "RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    code, _, err = cli("train", SHRINKCNN, "--dataset", "digits", "--device", "cuda",
                       "--out", tmp_path / "t")  # fmt: skip
    assert code == 2
    assert err.strip() == (
        "autoshrink: error: process 1 (local rank 1): device 'cuda': only 1 CUDA GPU(s) here"
    )
    # a configuration error all processes share is rank 0's to say
    code, _, err = cli("train", SHRINKCNN, "--dataset", "digits", "--epochs", "0",
                       "--out", tmp_path / "t")  # fmt: skip
    assert code == 2 and err == ""


@pytest.mark.parametrize("rank", ["0", "1"])
def test_an_rnn_training_under_torchrun_is_refused(cli, monkeypatch, tmp_path, rank) -> None:
    """``train --task rnn`` has no multi-process loop: under torchrun every process trained
    the whole model alone and wrote the same --out (log.jsonl got each epoch once per
    process), exit status 0. Refused, by rank 0 alone, before anything is written."""
    from test_rnn_text import write_tiny_corpus

    env = {"TORCHELASTIC_RUN_ID": "x", "RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": "2"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "lm"
    code, _, err = cli("train", SHRINKCNN.with_name("shrinkrnn.json"), "--task", "rnn",
                       "--data", write_tiny_corpus(tmp_path / "text"), "--nhid", "4",
                       "--epochs", "1", "--out", out)  # fmt: skip
    assert code == 2 and not out.exists()
    said = "autoshrink: error: --task rnn trains in one process; run it without torchrun " \
        "(WORLD_SIZE 2)\n"  # fmt: skip
    assert err == (said if rank == "0" else "")


def test_end_process_flushes_and_skips_the_interpreter_teardown() -> None:
    """The teardown that gloo's threads, still releasing a collective's tensors, can abort
    (SIGABRT) does not run; what was printed and logged is out."""
    script = textwrap.dedent(
        """
        import atexit, logging, sys
        from autoshrink.training.distributed import end_process
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
        atexit.register(lambda: print(" and the teardown ran"))
        print("printed", end="")  # no newline, to a pipe: still in the buffer
        logging.getLogger("x").info("logged")
        end_process(3)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert (run.returncode, run.stdout, run.stderr.strip()) == (3, "printed", "logged")


@pytest.mark.slow
def test_autoshrink_train_runs_under_torchrun(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["-m", "autoshrink", "train", SHRINKCNN, "--dataset", "imagefolder", "--data-dir"]
    args += [tree, "--epochs", "2", "--image-size", "16", "--width", "0.25"]
    run = _launch([*args, "--batch-size", "8", "--out", out], procs=2)
    assert run.returncode == 0, _said(run)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2 and len(metrics["history"]) == 2
    assert run.stdout.count("test accuracy") == 1  # rank 0 alone reports
    assert len((out / "log.jsonl").read_text().splitlines()) == 2
    assert not (out / "run.lock").exists()  # rank 0 let --out go before its process ended
    # a finished run resumed trains nothing and keeps its metrics (2 processes, not resumed)
    again = _launch([*args, "--batch-size", "8", "--resume", "--out", out])  # one process
    assert again.returncode == 0, _said(again)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert again.stdout.count("test accuracy") == 1
    # a configuration error is said once, by rank 0, not once per process
    bad = _launch([*args, "--batch-size", "7", "--out", tmp_path / "bad"], procs=2)
    assert bad.returncode != 0
    assert bad.stderr.count("autoshrink: error: ") == 1, bad.stderr[-2000:]
    assert "must be a multiple of the 2 processes" in bad.stderr


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description="the training script the tests launch")
    cli.add_argument("root", type=Path)
    cli.add_argument("out", type=Path)
    cli.add_argument("--resume", action="store_true")
    cli.add_argument("--kill-at", type=int, nargs=2, default=None)
    cli.add_argument("--batch-norm", action="store_true")
    a = cli.parse_args()
    train(a.root, a.out, a.resume, tuple(a.kill_at) if a.kill_at else None, a.batch_norm)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        end_process(0)  # as a process of a multi-process run ends: gloo's threads outlive it
