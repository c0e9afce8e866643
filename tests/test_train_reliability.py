"""``autoshrink train`` and ``export`` on bad runs: a resume of another run, a folder holding
finished results, a training that diverges, NaN weights, settings out of range and options of
the other ``--task`` -- each one line and exit status 2, with every JSON file strict."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from autoshrink.atomic_write import write_json
from autoshrink.errors import ConfigError, JournalError
from autoshrink.graph import Cell
from autoshrink.settings_diff import differences
from autoshrink.training.final_language import LMRecipe
from autoshrink.training.recipes import Recipe

CELLS = Path(__file__).resolve().parents[1] / "src" / "autoshrink" / "cells"
CNN, RNN = CELLS / "shrinkcnn.json", CELLS / "shrinkrnn.json"
TINY = ["--dataset", "digits", "--no-flip", "--width", "0.25", "--batch-size", "64"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def strict_json(path: Path) -> dict:
    """The file parsed by a reader that refuses NaN and Infinity (as every other language's)."""

    def refuse(token: str) -> None:
        raise AssertionError(f"{path}: {token} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-epoch training on digits (the folder is not modified by the tests)."""
    from autoshrink.cli import main

    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", str(CNN), *TINY, "--epochs", "2", "--out", str(out)]) == 0
    return out


def copy_of(folder: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, tmp_path / "copy"))


# ----------------------------------------------------------------- resume of another run
@pytest.mark.parametrize(
    ("change", "named"),
    [
        (["--dataset", "colored-digits"], 'dataset.name: "digits" -> "colored-digits"'),
        (["--width", "0.5"], "macro.width: 0.25 -> 0.5"),
        (["--activation", "swish"], 'cell.activation: "relu" -> "swish"'),
        (["--seed", "1"], "seed: 0 -> 1"),
        (["--lr", "0.2"], "recipe.lr_per_256: 0.1 -> 0.2"),
        (["--epochs", "3"], "recipe.epochs: 2 -> 3); the learning-rate schedule spans the epochs"),
        # fewer epochs lengthen nothing: that hint was given for any change of epochs
        (["--epochs", "1"], "recipe.epochs: 2 -> 1); resume with the same settings"),
    ],
)
def test_resume_of_another_run_is_refused_naming_the_change(
    cli, trained: Path, tmp_path: Path, change: list[str], named: str, caplog
) -> None:
    out = copy_of(trained, tmp_path)
    before = snapshot(out)
    args = [*TINY, "--epochs", "2", *change]  # a later --epochs wins
    with caplog.at_level("INFO", logger="autoshrink"):
        code, stdout, err = cli("train", CNN, *args, "--resume", "--out", out)
    assert code == 2 and err.count("\n") == 1, err
    assert "resuming from" not in caplog.text  # it was said before the refusal: two lines
    assert "of another run" in err and named in err and "epoch 2" in err
    assert "test accuracy" not in stdout
    assert snapshot(out) == before


def test_a_checkpoint_whose_recipe_is_damaged_is_another_run() -> None:
    # the lengthened-run hint read the recipe as an object: AttributeError, not the one line
    from autoshrink.training.checkpoint import Checkpoint, check_same_run

    identity = {"run": {"task": "cnn"}, "recipe": {"epochs": 2}, "seed": 0}
    damaged = Checkpoint(2, {}, {**identity, "recipe": "damaged"})
    with pytest.raises(JournalError, match=r'of another run \(recipe: "damaged" -> '):
        check_same_run(damaged, identity, Path("ck"))


def test_json_prints_metrics_json(cli, trained: Path, tmp_path: Path) -> None:
    out = copy_of(trained, tmp_path)
    code, stdout, err = cli("train", CNN, *TINY, "--epochs", "2", "--resume", "--json",
                            "--out", out)  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout) == strict_json(out / "metrics.json")


def test_resume_with_another_cell_is_one_line(cli, trained: Path, tmp_path: Path) -> None:
    out = copy_of(trained, tmp_path)
    other = json.loads(CNN.read_text())
    other["edges"] = other["edges"][:-1]  # one edge fewer: other weights
    (tmp_path / "other.json").write_text(json.dumps(other))
    before = snapshot(out)
    code, _, err = cli("train", tmp_path / "other.json", *TINY, "--epochs", "2", "--resume",
                       "--out", out)  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "cell.edges changed" in err, err
    assert snapshot(out) == before


def test_resume_with_the_same_settings_still_resumes(
    cli, trained: Path, tmp_path: Path, caplog
) -> None:
    out = copy_of(trained, tmp_path)
    before = strict_json(out / "metrics.json")
    with caplog.at_level("INFO", logger="autoshrink"):
        code, stdout, err = cli("train", CNN, *TINY, "--epochs", "2", "--resume", "--out", out)
    assert code == 0, err
    assert f"resuming from {out / 'checkpoints' / 'epoch-0002.json'}" in caplog.messages
    # the training had ended: nothing trained now, and its metrics say how it ran (it was
    # rewritten as resumed from its last epoch, by one process)
    assert strict_json(out / "metrics.json") == before and before["resumed_from_epoch"] == 0
    assert f"test accuracy {before['test_accuracy']:.4f} on digits" in stdout
    # a metrics.json that is not the end of this training (an earlier attempt's, diverged;
    # the end's files not written): the end is written again, not printed from it (a crash)
    write_json(out / "metrics.json", {**before, "diverged": True, "test_accuracy": None})
    code, stdout, err = cli("train", CNN, *TINY, "--epochs", "2", "--resume", "--out", out)
    assert code == 0, err
    again = strict_json(out / "metrics.json")
    assert again["diverged"] is False and again["test_accuracy"] == before["test_accuracy"]
    state = json.loads((out / "checkpoints" / "epoch-0002.json").read_text())
    assert state["run"]["task"] == "cnn" and state["run"]["dataset"]["name"] == "digits"
    assert state["run"]["cell"] == Cell.load(CNN).to_dict()


@pytest.mark.parametrize(
    "damage",
    [
        {"params": None},  # a value of another type
        {"test_accuracy": "0.9"},
        {"domains": 5},
    ],
)
def test_a_resume_of_a_finished_training_writes_a_damaged_metrics_json_again(
    cli, trained: Path, tmp_path: Path, damage: dict, caplog
) -> None:
    """Its summary was printed from the damaged file: a traceback, exit status 1, until
    2026-12-08 (a missing key too)."""
    out = copy_of(trained, tmp_path)
    before = strict_json(out / "metrics.json")
    for damaged in ({**before, **damage}, {k: v for k, v in before.items() if k != "params"}):
        write_json(out / "metrics.json", damaged)
        code, stdout, err = cli("train", CNN, *TINY, "--epochs", "2", "--resume", "--out", out)
        assert code == 0, err
        again = strict_json(out / "metrics.json")
        assert again == {**before, "resumed_from_epoch": 2}  # from the checkpoint of epoch 2
        assert f"test accuracy {before['test_accuracy']:.4f} on digits" in stdout
        assert f"{out / 'metrics.json'} is damaged" in caplog.text


def test_a_resume_of_a_finished_training_writes_a_metrics_json_that_is_no_json_again(
    cli, trained: Path, tmp_path: Path, caplog
) -> None:
    """It was refused in one line that did not say what to do (`not valid JSON`), until
    2026-12-08, where a damaged value was written again."""
    out = copy_of(trained, tmp_path)
    before = strict_json(out / "metrics.json")
    (out / "metrics.json").write_text('{"test_accuracy": 0.9')  # cut short
    code, stdout, err = cli("train", CNN, *TINY, "--epochs", "2", "--resume", "--out", out)
    assert code == 0, err
    assert strict_json(out / "metrics.json") == {**before, "resumed_from_epoch": 2}
    assert f"{out / 'metrics.json'}: not valid JSON" in caplog.text


def test_a_resume_of_a_finished_training_writes_damaged_weights_again(
    cli, trained: Path, tmp_path: Path, caplog
) -> None:
    """A cut-short weights.safetensors was kept, and the summary pointed at it, until
    2026-12-08."""
    out = copy_of(trained, tmp_path)
    weights = {k: v.clone() for k, v in load_file(str(out / "weights.safetensors")).items()}
    with (out / "weights.safetensors").open("r+b") as f:
        f.truncate(100)
    code, stdout, err = cli("train", CNN, *TINY, "--epochs", "2", "--resume", "--out", out)
    assert code == 0, err
    again = load_file(str(out / "weights.safetensors"))
    assert again.keys() == weights.keys() and all(torch.equal(again[k], weights[k]) for k in again)
    assert f"{out / 'weights.safetensors'} is unreadable" in caplog.text


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda d: [1], "not an autoshrink.checkpoint/1 checkpoint of epoch 2"),
        (lambda d: {k: v for k, v in d.items() if k != "optimizer"}, "restored (KeyError"),
        (lambda d: {**d, "schedule": "x"}, "cannot be restored"),
        (lambda d: {**d, "sampler": {"seed": "a"}}, "cannot be restored"),
        # another seed (another data order) or epoch went on unnoticed
        (
            lambda d: {**d, "sampler": {"seed": 5, "epoch": 2}},
            'restored (sampler must be {"seed": 0, "epoch": 2}, got {"seed": 5, "epoch": 2})',
        ),
        (lambda d: {**d, "sampler": {"seed": 0, "epoch": 1}}, 'got {"seed": 0, "epoch": 1})'),
        # the run was compared before the guard that names the file: a TypeError traceback
        (lambda d: {**d, "run": "x"}, 'a damaged checkpoint, it cannot be restored (its "run"'),
        (lambda d: {**d, "run": [1]}, 'restored (its "run" is not an object); remove it'),
        # a schedule's step count was taken as it came: another learning rate from then on
        (lambda d: {**d, "schedule": {"steps": -5}}, "steps must be an integer >= 0, got -5)"),
        (lambda d: {**d, "schedule": {"steps": "5"}}, 'steps must be an integer >= 0, got "5"'),
        (lambda d: {**d, "schedule": {"steps": 6}}, "steps is 6, where epoch 2 ends at step 44"),
        # the history went into metrics.json as it was
        (lambda d: {**d, "history": "x"}, "restored (its history is not a list of objects)"),
        (lambda d: {**d, "history": d["history"][:1]}, "history is not of epochs 1 to 2)"),
        (
            lambda d: {**d, "history": [d["history"][0], {**d["history"][1], "test_loss": "x"}]},
            'restored (epoch 2 of its history has no number "test_loss")',
        ),
    ],
)
def test_a_damaged_checkpoint_is_one_line(
    cli, trained: Path, tmp_path: Path, damage, named: str
) -> None:
    out = copy_of(trained, tmp_path)
    (out / "metrics.json").unlink()
    state = out / "checkpoints" / "epoch-0002.json"
    state.write_text(json.dumps(damage(json.loads(state.read_text()))))
    code, _, err = cli("train", CNN, *TINY, "--epochs", "2", "--resume", "--out", out)
    assert code == 2 and err.count("\n") == 1 and "epoch-0002.json: " in err and named in err, err
    assert not (out / "metrics.json").exists()


def test_tensors_of_another_epoch_are_refused(cli, trained: Path, tmp_path: Path) -> None:
    """A checkpoint's tensors were never checked against its JSON state: another run's epoch-1
    tensors copied in as epoch 2 resumed without a word (test accuracy 0.22 for 0.81)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    out = copy_of(trained, tmp_path)
    (out / "metrics.json").unlink()
    tensors = out / "checkpoints" / "epoch-0002.safetensors"
    with safe_open(str(tensors), framework="pt") as f:
        meta = f.metadata()
    save_file(load_file(str(tensors)), str(tensors), {**meta, "epoch": "1"})
    code, _, err = cli("train", CNN, *TINY, "--epochs", "2", "--resume", "--out", out)
    assert code == 2 and err.count("\n") == 1, err
    assert "epoch-0002.safetensors: not the tensors of epoch 2 (its header says format " in err
    assert not (out / "metrics.json").exists()


@pytest.mark.parametrize(
    ("updates", "named"),
    [  # 1.5 and true were taken as 1; -10 divided by zero in the EMA's warm-up (a traceback)
        (1.5, "ema_updates must be 44 (one per step), got 1.5"),
        (True, "ema_updates must be 44 (one per step), got true"),
        (-10, "ema_updates must be 44 (one per step), got -10"),
        (43, "ema_updates must be 44 (one per step), got 43"),
    ],
)
def test_a_damaged_ema_count_is_one_line(cli, tmp_path: Path, updates, named: str) -> None:
    out = tmp_path / "run"
    args = [*TINY, "--epochs", "2", "--ema", "0.9", "--out", out]
    assert cli("train", CNN, *args)[0] == 0
    (out / "metrics.json").unlink()
    state = out / "checkpoints" / "epoch-0002.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "ema_updates": updates}))
    code, _, err = cli("train", CNN, *args, "--resume")
    assert code == 2 and err.count("\n") == 1 and "epoch-0002.json: " in err and named in err, err


def test_differences_name_each_changed_leaf() -> None:
    old = {"a": 1, "b": {"c": "x", "d": [1, 2]}, "gone": 1}
    new = {"a": 1, "b": {"c": "y", "d": [1, 2]}, "new": "z" * 50}
    assert differences(old, new) == ['b.c: "x" -> "y"', "gone: 1 -> null", "new changed"]
    assert differences(old, old) == []


# ----------------------------------------------------------------- a folder already used
def test_train_refuses_a_folder_holding_a_training(cli, trained: Path, tmp_path: Path) -> None:
    out = copy_of(trained, tmp_path)
    before = snapshot(out)
    code, _, err = cli("train", CNN, *TINY, "--epochs", "1", "--out", out)
    assert code == 2 and err.count("\n") == 1
    assert str(out) in err and "recipe.json" in err and "--resume" in err
    assert snapshot(out) == before


def test_a_folder_another_training_holds_is_refused_naming_its_process(
    cli, trained: Path, tmp_path: Path
) -> None:
    """Two trainings in one --out wrote into the same log, checkpoints and metrics (both
    ended with status 0): the second, begun before the first wrote its recipe, or a second
    --resume, now stops at once."""
    from autoshrink.journal import LOCK, RunLock

    held = f"is in use by process {os.getpid()}"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with RunLock(fresh):  # a training that has not written anything yet
        code, _, err = cli("train", CNN, *TINY, "--epochs", "1", "--out", fresh)
        assert code == 2 and err.count("\n") == 1 and f"{fresh} {held}" in err, err
        assert [p.name for p in fresh.iterdir()] == [LOCK]
    out = copy_of(trained, tmp_path)
    before = snapshot(out)
    with RunLock(out):
        for task in (["--task", "rnn"], []):
            cell = RNN if task else CNN
            flags = ["--data", tmp_path] if task else TINY
            code, _, err = cli(
                "train", cell, *task, *flags, "--epochs", "2", "--resume", "--out", out
            )
            assert code == 2 and err.count("\n") == 1 and f"{out} {held}" in err, err
    assert snapshot(out) == before  # and run.lock is gone with the lock


def test_a_refused_start_leaves_no_folder_and_a_training_no_lock(cli, tmp_path: Path) -> None:
    from autoshrink.journal import LOCK

    code, _, err = cli("train", CNN, *TINY, "--lr", "nan", "--out", tmp_path / "a" / "b")
    assert code == 2 and "--lr" in err
    assert list(tmp_path.iterdir()) == []  # the folders made to hold --out are gone
    code, _, err = cli("train", CNN, *TINY, "--epochs", "1", "--out", tmp_path / "t")
    assert code == 0, err
    assert not (tmp_path / "t" / LOCK).exists()


def test_a_full_disk_before_the_first_checkpoint_leaves_the_folder_free(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk while the first checkpoint was written left recipe.json, cell.json and an
    empty log.jsonl, and the same command was refused ('already holds the results of an
    `autoshrink train` run'); a full disk that stops a new search does not keep its folder."""
    import errno

    def full(path, tensors, metadata=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    out = tmp_path / "runs" / "t"
    args = ["train", CNN, *TINY, "--epochs", "1", "--out", out]
    with monkeypatch.context() as m:
        m.setattr("autoshrink.training.checkpoint.save_tensors", full)
        code, _, err = cli(*args)
    assert code == 2 and err.count("\n") == 1 and "epoch-0001.safetensors" in err, err
    assert list(tmp_path.iterdir()) == []  # nothing, and no folder made for it, stays
    code, _, err = cli(*args)  # the same command, once there is room
    assert code == 0, err
    assert (out / "weights.safetensors").is_file()


def test_rnn_train_refuses_a_folder_holding_a_training(cli, tmp_path: Path) -> None:
    out = tmp_path / "lm"
    out.mkdir()
    (out / "metrics.json").write_text('{"task": "rnn"}\n')
    code, _, err = cli("train", RNN, "--task", "rnn", "--data", tmp_path, "--out", out)
    assert code == 2 and "metrics.json" in err and err.count("\n") == 1
    assert (out / "metrics.json").read_text() == '{"task": "rnn"}\n'
    # --resume cannot start such a folder afresh either: it has no checkpoint
    code, _, err = cli("train", CNN, *TINY, "--epochs", "1", "--resume", "--out", out)
    assert code == 2 and "no checkpoint to resume from" in err
    assert (out / "metrics.json").read_text() == '{"task": "rnn"}\n'


def test_resume_without_a_checkpoint_warns_and_starts_at_epoch_1(
    cli, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "fresh"
    with caplog.at_level(logging.WARNING, logger="autoshrink.training.final"):
        code, _, err = cli("train", CNN, *TINY, "--epochs", "1", "--resume", "--out", out)
    assert code == 0, err
    assert "no checkpoint to resume from; training starts from scratch" in caplog.text
    assert strict_json(out / "metrics.json")["resumed_from_epoch"] == 0


def test_a_resume_removes_the_temporary_files_of_a_killed_training(
    cli, trained: Path, tmp_path: Path, ended_pid: int
) -> None:
    """A SIGKILL while a checkpoint was written left its hidden temporary file
    (``.epoch-NNNN.safetensors.PID.tmp``, as large as a checkpoint) for good: a resume from
    the checkpoint before kept it, and every such kill added one."""
    out = copy_of(trained, tmp_path)
    ended = ended_pid
    dead = [out / "checkpoints" / f".epoch-0003.safetensors.{ended}.tmp",
            out / f".weights.safetensors.{ended}.tmp"]  # fmt: skip
    for path in dead:
        path.write_bytes(b"half a file")
    live = out / f".metrics.json.{os.getpid()}.tmp"  # a running writer's: kept
    live.write_text("{")
    code, _, err = cli("train", CNN, *TINY, "--epochs", "2", "--resume", "--out", out)
    assert code == 0, err
    assert [path.exists() for path in dead] == [False, False] and live.exists()


# ----------------------------------------------------------------- divergence
def test_a_diverging_cnn_training_keeps_its_metrics_and_fails(cli, tmp_path: Path) -> None:
    out = tmp_path / "runs" / "nan"  # its parent is made too
    code, stdout, err = cli("train", CNN, *TINY, "--epochs", "2", "--lr", "1e6", "--out", out)
    assert code == 2 and err.count("\n") == 1, err
    assert "diverged at epoch 1" in err and "train loss nan" in err and "--lr" in err
    assert "test accuracy" not in stdout
    metrics = strict_json(out / "metrics.json")
    assert metrics["diverged"] and metrics["diverged_epoch"] == 1
    assert metrics["test_accuracy"] is None and metrics["weights"] is None
    assert metrics["diverged_loss"] == {"train_loss": None, "test_loss": None}
    assert not (out / "weights.safetensors").exists()  # NaN weights are not kept
    assert not list((out / "checkpoints").glob("*.json"))  # nor checkpointed
    for line in (out / "log.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda t: pytest.fail(f"{t} in log.jsonl"))
    # the advice leads out of the folder: --resume and a new training there are both refused
    assert "with another --out" in err
    code, _, err = cli("train", CNN, *TINY, "--epochs", "2", "--lr", "0.1", "--out", out)
    assert code == 2 and "choose another --out" in err
    code, _, err = cli("train", CNN, *TINY, "--epochs", "2", "--resume", "--out", out)
    assert code == 2 and "a training that ended (metrics.json: finished or diverged)" in err


def test_only_a_training_on_the_cpu_flushes_denormal_floats(monkeypatch) -> None:
    from autoshrink.cli.train import set_up_process
    from autoshrink.training.distributed import DistContext

    calls: list[bool] = []
    monkeypatch.setattr(torch, "set_flush_denormal", calls.append)
    set_up_process(DistContext(device=torch.device("cuda")))
    assert calls == []
    set_up_process(DistContext(device=torch.device("cpu")))
    assert calls == [True]


def test_a_divergence_after_epochs_names_the_newest_checkpoint_kept() -> None:
    from autoshrink.cli.train import diverged_message
    from autoshrink.training.final import FinalResult

    history = [{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": 1.5}]
    result = FinalResult(
        math.nan, math.nan, history, diverged_epoch=3, diverged_loss={"train_loss": math.inf}
    )
    assert diverged_message(result, Recipe(lr_per_256=0.5), Path("o")) == (
        "training diverged at epoch 3 (train loss inf): try a lower --lr (now 0.5 per 256 "
        "images) with another --out; o keeps metrics.json and the checkpoint of epoch 2"
    )


def test_a_diverging_rnn_training_keeps_its_metrics_and_fails(
    cli, tmp_path: Path, corpus_dir: Path
) -> None:
    out = tmp_path / "lm"
    code, stdout, err = cli(
        "train", RNN, "--task", "rnn", "--data", corpus_dir, "--nhid", "8", "--epochs", "2",
        "--batch-size", "8", "--test-batch-size", "4", "--lr", "1e30", "--out", out,
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1, err
    assert "diverged at epoch 1" in err and "--lr" in err
    assert "perplexity" not in stdout
    metrics = strict_json(out / "metrics.json")
    assert metrics["diverged"] and metrics["diverged_epoch"] == 1
    assert metrics["val_perplexity"] is None and metrics["test_perplexity"] is None
    assert metrics["history"][0]["train_loss"] is None
    assert not (out / "weights.safetensors").exists()  # no epoch was scored


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    from test_rnn_text import write_tiny_corpus

    return write_tiny_corpus(tmp_path / "corpus", n_train=60, n_eval=20)


# ----------------------------------------------------------------- settings out of range
@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--weight-decay", "-1"], "weight_decay must be finite and >= 0, got -1.0"),
        (["--weight-decay", "nan"], "weight_decay must be finite and >= 0, got nan"),
        (["--lr", "0"], "lr must be finite and > 0, got 0.0"),
        (["--lr", "inf"], "lr must be finite and > 0, got inf"),
        (["--bptt", "0"], "bptt must be >= 1, got 0"),
        (["--test-batch-size", "0"], "test_batch_size must be >= 1, got 0"),
        (["--nhid", "-3"], "--nhid must be >= 1, got -3"),
        (["--nhid", "0"], "--nhid must be >= 1, got 0"),
        (["--dropouts", "0.5", "0.5", "0.5", "0.5", "1.5"], "dropout word must be in [0, 1)"),
    ],
)
def test_bad_rnn_settings_are_one_line(cli, tmp_path: Path, flags: list[str], needle: str) -> None:
    with warnings.catch_warnings(record=True) as caught:  # torch warned of nhid 0 first
        warnings.simplefilter("always")
        code, _, err = cli("train", RNN, "--task", "rnn", "--data", tmp_path, *flags,
                           "--out", tmp_path / "o")  # fmt: skip
    assert code == 2 and needle in err and err.count("\n") == 1, err
    assert not caught, [str(w.message) for w in caught]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--lr", "nan"], "--lr (per 256 images) must be finite and > 0, got nan"),
        (["--lr", "-1"], "--lr (per 256 images) must be finite and > 0, got -1"),
        (["--epochs", "0"], "epochs must be >= 1, got 0"),
        (["--epochs", "-2"], "epochs must be >= 1, got -2"),
        (["--ema", "nan"], "--ema must lie in [0, 1] (0 turns the EMA off), got nan"),
        (["--ema", "1.5"], "--ema must lie in [0, 1] (0 turns the EMA off), got 1.5"),
        (["--batch-size", "0"], "batch_size must be >= 1, got 0"),
        (["--threads", "0"], "--threads must be an integer in 1..1024, got 0"),
    ],
)
def test_bad_cnn_settings_are_one_line(cli, tmp_path: Path, flags: list[str], needle: str) -> None:
    code, _, err = cli("train", CNN, "--dataset", "digits", *flags, "--out", tmp_path / "o")
    assert code == 2 and needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("given", "decay"), [("1", 1.0), ("0.5", 0.5), ("0", None)])
def test_ema_bounds_are_taken_as_the_recipe_takes_them(given: str, decay: float | None) -> None:
    # [0, 1]: 1 is a decay the recipe takes (its warm-up keeps it below 1), 0 turns the EMA off
    from autoshrink.cli import build_parser, train

    args = build_parser("train").parse_args(["train", str(CNN), "--ema", given])
    train.settle_task_options(args)
    assert train.recipe_from_args(args).ema_decay == decay


@pytest.mark.parametrize("task", ["cnn", "rnn"])
def test_threads_hold_for_the_training_and_are_restored(
    cli, tmp_path: Path, monkeypatch, task: str
) -> None:
    from autoshrink.cli import rnn, train

    seen = []
    monkeypatch.setattr(rnn, "run_train", lambda args: seen.append(torch.get_num_threads()) or 0)
    monkeypatch.setattr(train, "run_cnn", lambda args: seen.append(torch.get_num_threads()) or 0)
    before = torch.get_num_threads()
    cell = RNN if task == "rnn" else CNN
    code, _, err = cli("train", cell, "--task", task, "--threads", "3", "--out", tmp_path / "o")
    assert code == 0 and seen == [3] and torch.get_num_threads() == before, err


def test_recipes_name_the_bad_value() -> None:
    with pytest.raises(ConfigError, match=r"weight_decay must be finite and >= 0, got -0.1"):
        Recipe(weight_decay=-0.1)
    with pytest.raises(ConfigError, match=r"warmup_epochs must be finite and >= 0, got inf"):
        Recipe(warmup_epochs=math.inf)
    with pytest.raises(ConfigError, match=r"tar must be finite and >= 0, got nan"):
        LMRecipe(tar=math.nan)
    with pytest.raises(ConfigError, match=r"clip must be finite and > 0, got 0"):
        LMRecipe(clip=0)


# ----------------------------------------------------------------- options of the other task
@pytest.mark.parametrize(
    ("task", "flags", "named"),
    [
        ("cnn", ["--bptt", "0"], "--bptt: only for --task rnn, not --task cnn"),
        ("cnn", ["--weight-decay", "-1", "--nhid", "8"], "--nhid, --weight-decay: only for"),
        ("cnn", ["--no-asgd"], "--asgd: only for --task rnn"),
        ("rnn", ["--dataset", "digits"], "--dataset: only for --task cnn, not --task rnn"),
        ("rnn", ["--no-flip", "--width", "0.5"], "--width, --no-flip: only for --task cnn"),
        ("rnn", ["--test-domain", "0.1"], "--test-domain: only for --task cnn"),
    ],
)
def test_options_of_the_other_task_are_refused(
    cli, tmp_path: Path, task: str, flags: list[str], named: str
) -> None:
    cell = CNN if task == "cnn" else RNN
    code, _, err = cli("train", cell, "--task", task, *flags, "--out", tmp_path / "o")
    assert code == 2 and named in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_help_still_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from autoshrink.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "(default: digits)" in shown and "(default: 745)" in shown
    assert "(default: cifar-proxy)" in shown and "(default: 0)" in shown


def _first(tensors: dict[str, torch.Tensor], prefix: str, suffix: str) -> str:
    return next(k for k in sorted(tensors) if k.startswith(prefix) and k.endswith(suffix))


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        # the optimiser took these silently: a traceback at the first step, or another run
        (
            lambda t: t.update({"optim.9.momentum_buffer": torch.zeros(3)}),
            "json: a damaged checkpoint, it cannot be restored (shape of optim.9.momentum_buffer "
            "is [3], its parameter's [8, 1, 3, 3])",
        ),
        (
            lambda t: t.pop("optim.9.momentum_buffer"),
            "json: a damaged checkpoint, it cannot be restored (no optim.9.momentum_buffer, "
            "which other parameters have)",
        ),
        (
            lambda t: t.update({"optim.999.momentum_buffer": torch.zeros(3)}),
            "restored (optim.999: a parameter the optimiser does not have)",
        ),
        (
            lambda t: [t.pop(k) for k in list(t) if k.startswith("optim.")],
            "restored (no optimiser state (optim.*) after its steps)",
        ),
        # these trained on and were blamed on the learning rate ("training diverged")
        (
            lambda t: t[_first(t, "optim.", "momentum_buffer")].fill_(math.nan),
            "safetensors: a damaged checkpoint, it cannot be restored (tensor optim.",
        ),
        (
            lambda t: t[_first(t, "model.", "weight")].fill_(math.inf),
            "weight holds NaN or inf values); remove it and epoch-0002.json to resume",
        ),
        (
            lambda t: t[_first(t, "model.", "running_var")].fill_(-1.0),
            "running_var holds a negative variance)",
        ),
    ],
)
def test_a_checkpoint_with_damaged_tensors_is_one_line(
    cli, trained: Path, tmp_path: Path, damage, named: str
) -> None:
    out = copy_of(trained, tmp_path)
    (out / "metrics.json").unlink()
    path = out / "checkpoints" / "epoch-0002.safetensors"
    tensors = load_file(str(path))
    damage(tensors)
    save_file(tensors, str(path), {"format": "autoshrink.checkpoint/1", "epoch": "2"})
    before = snapshot(out)
    code, stdout, err = cli("train", CNN, *TINY, "--epochs", "2", "--resume", "--out", out)
    assert code == 2 and err.count("\n") == 1 and named in err, err
    assert "epoch-0002." in err and "diverged" not in err and "test accuracy" not in stdout
    assert snapshot(out) == before


# ----------------------------------------------------------------- export of bad weights
def test_export_refuses_nan_weights_and_a_folder(cli, trained: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", exc_type=ImportError)
    state = load_file(str(trained / "weights.safetensors"))
    name = next(k for k in sorted(state) if state[k].is_floating_point())
    state[name] = torch.full_like(state[name], math.nan)
    bad = tmp_path / "nan.safetensors"
    save_file(state, str(bad))
    common = ["--image-size", "8", "--width", "0.25", "--json"]
    code, stdout, err = cli("export", CNN, "--weights", bad, *common, "--out", tmp_path / "e")
    assert code == 2 and err.count("\n") == 1 and stdout == ""
    assert str(bad) in err and f"tensor {name} holds NaN or inf" in err
    assert not (tmp_path / "e").exists()
    code, _, err = cli("export", CNN, "--weights", trained, *common, "--out", tmp_path / "e")
    assert code == 2 and "a folder, not a .safetensors weights file" in err
    assert "os error" not in err


def test_export_json_is_strict_when_a_check_cannot_be_measured(
    cli, trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime", exc_type=ImportError)
    import numpy as np

    from autoshrink.export import bundle

    real = bundle.compare
    monkeypatch.setattr(bundle, "compare", lambda got, exp: real(got * np.nan, exp))
    out = tmp_path / "e"
    args = ["--weights", trained / "weights.safetensors", "--image-size", "8", "--width", "0.25"]
    code, stdout, err = cli("export", CNN, *args, "--json", "--out", out)
    assert code == 1 and "export check failed" in err
    printed = json.loads(stdout, parse_constant=lambda t: pytest.fail(f"{t} printed"))
    assert printed["onnx_max_abs_diff"] is None and not printed["ok"]
    manifest = strict_json(out / "export.json")
    assert manifest["checks"]["onnxruntime_vs_torch_max_abs_diff"] is None


def test_checkpoint_of_another_network_without_a_record_is_one_line(tmp_path: Path) -> None:
    """A checkpoint written before checkpoints recorded the run: the mismatch of the weights
    is still a JournalError, not a RuntimeError."""
    import numpy as np

    from autoshrink.data.images import ImageData
    from autoshrink.data.loaders import array_data
    from autoshrink.training.final import train_final
    from autoshrink.training.recipes import get_recipe

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 1, 4, 4)).astype(np.float32)
    y = np.arange(32) % 2
    recipe = get_recipe("cifar", epochs=1, batch_size=8, augment="none")
    data = array_data(ImageData("toy", x[:24], y[:24], x[24:], y[24:], ("a", "b")), recipe)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    train_final(net, data, recipe, out=tmp_path)
    ckpt = tmp_path / "checkpoints" / "epoch-0001.json"
    state = json.loads(ckpt.read_text())
    del state["run"]  # as an older autoshrink wrote it
    ckpt.write_text(json.dumps(state))
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    said = r"fit this network \(shape of 1.weight is \[2, 16\], the network's \[3, 16\]\)"
    with pytest.raises(JournalError, match=said):
        train_final(other, data, recipe, out=tmp_path, resume=True)
    # a network the checkpoint fits in part is left as it was, not loaded in part
    deeper = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2), torch.nn.Linear(2, 2))
    before = {k: v.clone() for k, v in deeper.state_dict().items()}
    with pytest.raises(
        JournalError, match=r"does not fit this network \(missing \['2.bias', '2.weight'\]\)"
    ):
        train_final(deeper, data, recipe, out=tmp_path, resume=True)
    assert all(torch.equal(v, deeper.state_dict()[k]) for k, v in before.items())
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Identity())
    said = r"fit this network \(unexpected \['1.bias', '1.weight'\]\)"
    with pytest.raises(JournalError, match=said):
        train_final(flat, data, recipe, out=tmp_path, resume=True)


def test_changed_settings_are_said_shortly() -> None:
    from autoshrink.settings_diff import first_three

    # a value is shown while its JSON has at most 40 characters, else only named
    assert differences({"a": "x" * 38}, {"a": "y"}) == [f'a: "{"x" * 38}" -> "y"']
    assert differences({"a": "x" * 39}, {"a": "y"}) == ["a changed"]
    four = differences({"a": 1, "b": 2, "c": 3, "d": 4}, {"a": 0, "b": 0, "c": 0, "d": 0})
    assert first_three(four) == "a: 1 -> 0, b: 2 -> 0, c: 3 -> 0 and 1 more"
    assert first_three(four[:3]) == "a: 1 -> 0, b: 2 -> 0, c: 3 -> 0"


# ----------------------------------------------------------------- a stop with data workers
def test_a_sigterm_to_the_process_group_with_data_workers_is_the_stop_line_alone(tmp_path):
    """``timeout`` and Slurm signal the whole group: the DataLoader workers died of it first, and
    torch printed their tracebacks after the line that says how to resume."""
    out = tmp_path / "t"
    args = [CNN, "--dataset", "digits", "--epochs", "40", "--width", "0.25", "--threads", "1"]
    args += ["--batch-size", "32", "--workers", "2", "--out", out]
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoshrink", "train", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a group of its own, as timeout makes
    )
    log = out / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and log.read_text().count("\n") >= 1):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1].startswith("autoshrink: training stopped by SIGTERM;")
    assert "Traceback" not in err and "Exception ignored" not in err, err


def test_an_unreadable_image_read_by_a_data_worker_is_one_line_and_the_process_ends(tmp_path):
    """With ``--workers N`` a truncated image was torch's 18-line "Caught DataError in
    DataLoader worker process 0" traceback, and then the process never ended: its persistent
    workers ignore SIGTERM, which Python's exit sends them before waiting on them."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in "ab":
        (tmp_path / "img" / c).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "img" / c / f"{i}.png")
    bad = tmp_path / "img" / "a" / "3.png"
    bad.write_bytes(bad.read_bytes()[:60])
    args = [CNN, "--dataset", "imagefolder", "--data-dir", tmp_path / "img", "--epochs", "1"]
    args += ["--batch-size", "4", "--threads", "1", "--workers", "1", "--out", tmp_path / "t"]
    done = subprocess.run(
        [sys.executable, "-m", "autoshrink", "train", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"autoshrink: error: {bad}: unreadable image (image file is truncated)"
    )
    assert "Traceback" not in done.stderr


def test_a_data_workers_fetch_cut_by_the_stopped_training_is_said_in_nothing(capsys):
    """A SIGTERM right after an epoch: the training stopped mid-fetch of a batch's shared
    memory, and the worker's resource-sharer thread printed a ConnectionResetError traceback
    after the line that says how to resume (2 of 4 stops in a row, on the 2-core box)."""
    from autoshrink.data.loaders import quiet_when_the_reader_left

    def raised_in(filename: str, error: BaseException) -> tuple:
        code = compile("def serve(e):\n    raise e\n", filename, "exec")
        scope: dict = {}
        exec(code, scope)
        try:
            scope["serve"](error)
        except BaseException as caught:  # noqa: BLE001
            return type(caught), caught, caught.__traceback__
        raise AssertionError("not raised")

    sharer = "/usr/lib/python3/multiprocessing/resource_sharer.py"
    quiet_when_the_reader_left(*raised_in(sharer, ConnectionResetError(104, "reset by peer")))
    assert capsys.readouterr().err == ""
    quiet_when_the_reader_left(*raised_in(sharer, ValueError("another fault")))
    quiet_when_the_reader_left(*raised_in("/x/loaders.py", ConnectionResetError(104, "reset")))
    err = capsys.readouterr().err
    assert "ValueError: another fault" in err and "ConnectionResetError" in err
