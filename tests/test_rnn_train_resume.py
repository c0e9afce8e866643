"""``autoshrink train --task rnn --resume``: a final language-model training killed after an
epoch and resumed reproduces the uninterrupted one exactly (history, weights, perplexities,
averaged SGD included); a resume of another run is refused naming the change; a folder holding
a finished training is refused without ``--resume`` and resumed with it; ``--resume`` with no
checkpoint starts from scratch."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from autoshrink.data.text import Corpus, load_text
from autoshrink.errors import JournalError
from autoshrink.graph import Cell
from autoshrink.nn.rnn import Dropouts, RNNModel
from autoshrink.training import final_language
from autoshrink.training.checkpoint import latest_epoch
from autoshrink.training.final_language import FinalLMResult, LMRecipe, train_final_lm
from test_rnn_text import one_thread, write_tiny_corpus  # noqa: F401 (autouse)

CELL = Cell("rnn", ("input", "tanh", "identity"), ((0, 1), (0, 2), (1, 2)))
RNN = Path(__file__).resolve().parents[1] / "src" / "autoshrink" / "cells" / "shrinkrnn.json"
# nonmono 1 on this corpus: averaged SGD starts after epoch 4 (checked by the tests)
RECIPE = LMRecipe(
    epochs=6, batch_size=8, bptt=10, lr=5.0, nonmono=1, eval_batch_size=4, test_batch_size=4
)
FLAGS = ["--nhid", "8", "--epochs", "3", "--batch-size", "8", "--bptt", "10",
         "--eval-batch-size", "4", "--test-batch-size", "4", "--lr", "5"]  # fmt: skip


class Killed(Exception):
    """Stands for the kill of a training after an epoch."""


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    return write_tiny_corpus(tmp_path / "corpus", n_train=60, n_eval=20)


@pytest.fixture
def corpus(corpus_dir: Path) -> Corpus:
    return load_text(corpus_dir)


def train(corpus: Corpus, folder: Path | None, *, resume: bool = False, kill_after: int = 0,
          init_seed: int = 0, recipe: LMRecipe = RECIPE,
          ) -> tuple[FinalLMResult, RNNModel]:  # fmt: skip
    """A run of ``recipe`` with dropout; ``kill_after``: stop it (an exception) after that
    epoch."""
    torch.manual_seed(init_seed)
    model = RNNModel(CELL, corpus.ntokens, emsize=8, nhid=8, dropouts=Dropouts.darts())

    def on_epoch(row: dict) -> None:
        if row["epoch"] == kill_after:
            raise Killed

    out = None if folder is None else folder.parent  # the run folder of that checkpoints/
    result = train_final_lm(model, corpus, recipe, seed=0, out=out, resume=resume,
                            run_info={"cell": CELL.to_dict()}, on_epoch=on_epoch)  # fmt: skip
    return result, model


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("kill_after", [2, 4, 5])  # before, as and after averaged SGD starts
def test_a_killed_training_resumes_to_the_uninterrupted_run(
    corpus: Corpus, tmp_path: Path, kill_after: int
) -> None:
    whole, whole_model = train(corpus, None)
    assert whole.asgd_epoch == 4 and not whole.diverged  # the setting exercises averaged SGD
    assert [h["averaged"] for h in whole.history] == [False] * 4 + [True] * 2
    folder = tmp_path / "checkpoints"
    with pytest.raises(Killed):
        train(corpus, folder, kill_after=kill_after)
    assert latest_epoch(folder) == kill_after
    # another initialisation: everything must come from the checkpoint
    resumed, model = train(corpus, folder, resume=True, init_seed=7)
    assert resumed.resumed_from == kill_after
    assert resumed.history == whole.history
    assert (resumed.best_epoch, resumed.asgd_epoch) == (whole.best_epoch, whole.asgd_epoch)
    assert resumed.val_perplexity == whole.val_perplexity
    assert resumed.test_perplexity == whole.test_perplexity
    assert_same_weights(model, whole_model)
    assert sorted(p.name for p in folder.iterdir()) == [  # the newest two are kept
        "epoch-0005.json", "epoch-0005.safetensors", "epoch-0006.json", "epoch-0006.safetensors"
    ]  # fmt: skip


def test_resuming_a_finished_training_changes_nothing(corpus: Corpus, tmp_path: Path) -> None:
    whole, whole_model = train(corpus, tmp_path / "checkpoints")
    again, model = train(corpus, tmp_path / "checkpoints", resume=True, init_seed=7)
    assert again.resumed_from == RECIPE.epochs and again.history == whole.history
    assert again.test_perplexity == whole.test_perplexity
    assert_same_weights(model, whole_model)


def test_a_resume_with_more_epochs_extends_a_finished_training_exactly(
    corpus: Corpus, tmp_path: Path
) -> None:
    whole, whole_model = train(corpus, None)  # RECIPE: 6 epochs
    folder = tmp_path / "checkpoints"
    short, _ = train(corpus, folder, recipe=replace(RECIPE, epochs=4))
    assert short.history == whole.history[:4]
    longer, model = train(corpus, folder, resume=True, init_seed=7)
    assert longer.resumed_from == 4 and longer.history == whole.history
    assert longer.test_perplexity == whole.test_perplexity
    assert_same_weights(model, whole_model)
    before = snapshot(folder)
    with pytest.raises(JournalError, match="checkpoint is of epoch 6, beyond epochs 4"):
        train(corpus, folder, resume=True, recipe=replace(RECIPE, epochs=4))
    assert snapshot(folder) == before


def test_a_resume_of_another_run_is_refused_before_anything_changes(
    corpus: Corpus, tmp_path: Path
) -> None:
    folder = tmp_path / "checkpoints"
    with pytest.raises(Killed):
        train(corpus, folder, kill_after=2)
    before = snapshot(folder)
    model = RNNModel(CELL, corpus.ntokens, emsize=8, nhid=8, dropouts=Dropouts.darts())
    with pytest.raises(JournalError, match=r"epoch 2 is of another run \(seed: 0 -> 1\)"):
        train_final_lm(model, corpus, RECIPE, seed=1, out=folder.parent, resume=True,
                       run_info={"cell": CELL.to_dict()})  # fmt: skip
    assert snapshot(folder) == before


def test_a_checkpoint_of_another_network_the_caller_did_not_name_is_one_line(
    corpus: Corpus, tmp_path: Path
) -> None:
    """A caller that says nothing of the network (no ``run_info``): resuming its checkpoint
    into a wider model is a JournalError naming the folder, the epoch and the first
    mismatch, and the model and the folder are left as they were."""
    folder = tmp_path / "checkpoints"
    torch.manual_seed(0)
    model = RNNModel(CELL, corpus.ntokens, emsize=8, nhid=8)
    train_final_lm(model, corpus, replace(RECIPE, epochs=1), seed=0, out=folder.parent)
    before = snapshot(folder)
    wider = RNNModel(CELL, corpus.ntokens, emsize=16, nhid=16)
    weights = {k: v.clone() for k, v in wider.state_dict().items()}
    said = (
        f"^{folder}: the checkpoint of epoch 1 does not fit this network \\(shape of "
        "encoder.weight is \\[.*, 8\\], the network's \\[.*, 16\\]\\)"
    )
    with pytest.raises(JournalError, match=said):
        train_final_lm(wider, corpus, replace(RECIPE, epochs=2), seed=0, out=folder.parent,
                       resume=True)  # fmt: skip
    assert snapshot(folder) == before
    assert all(torch.equal(v, wider.state_dict()[k]) for k, v in weights.items())


def _drop(tensors: dict, key: str) -> dict:
    return {k: v for k, v in tensors.items() if k != key}


def sgd_records_a_none_buffer() -> bool:
    """Whether this PyTorch's SGD without momentum keeps a ``momentum_buffer`` (``None``)."""
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=0.1)
    w.grad = torch.zeros(1)
    opt.step()
    return "momentum_buffer" in opt.state[w]


@pytest.mark.parametrize(
    ("tensors", "state", "named"),
    [  # a wrong shape was a RuntimeError from copy_ or set_rng_state: a traceback, exit 1
        (lambda t: {**t, "average.0": torch.zeros(3)}, {}, "shape of average.0 is [3], its"),
        (lambda t: _drop(t, "average.5"), {}, "5 averaged tensors for 6 parameters"),
        (lambda t: t, {"average_n": 1.5}, "average_n must be an integer >= 1 or null, got 1.5"),
        (lambda t: t, {"average_n": 0}, "average_n must be an integer >= 1 or null, got 0"),
        (
            lambda t: {**t, "rng.torch": torch.zeros(3, dtype=torch.uint8)},
            {},
            "rng.torch is no state of torch's generator (torch.uint8, [3])",
        ),
        # an optimiser state of another shape was loaded as it came (SGD here keeps none; on
        # PyTorch 2.2, whose SGD records a None buffer, the tensor was dropped in silence)
        (
            lambda t: {**t, "optim.0.momentum_buffer": torch.zeros(2)},
            {},
            "optim.0.momentum_buffer is both a tensor and a number"
            if sgd_records_a_none_buffer()
            else "shape of optim.0.momentum_buffer is [2], its parameter's [14, 8]",
        ),
    ],
)
def test_a_damaged_checkpoint_of_averaged_sgd_is_one_line(
    corpus: Corpus, tmp_path: Path, tensors, state: dict, named: str
) -> None:
    from safetensors.torch import save_file

    folder = tmp_path / "checkpoints"
    with pytest.raises(Killed):
        train(corpus, folder, kill_after=5)  # averaged SGD started after epoch 4
    stem = folder / "epoch-0005"
    saved = load_file(str(stem.with_suffix(".safetensors")))
    meta = {"format": "autoshrink.checkpoint/1", "epoch": "5"}  # the tensors of its epoch
    save_file(tensors(saved), str(stem.with_suffix(".safetensors")), meta)
    json_path = stem.with_suffix(".json")
    json_path.write_text(json.dumps({**json.loads(json_path.read_text()), **state}))
    with pytest.raises(JournalError) as info:
        train(corpus, folder, resume=True)
    said = str(info.value)
    assert "\n" not in said and str(folder) in said and named in said, said


def test_a_fresh_run_removes_stale_checkpoints(
    corpus: Corpus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "checkpoints"
    with pytest.raises(Killed):
        train(corpus, folder, kill_after=5)
    with caplog.at_level(logging.WARNING), pytest.raises(Killed):
        train(corpus, folder, kill_after=1)
    assert "removed the checkpoints of an earlier run" in caplog.text
    assert latest_epoch(folder) == 1 and len(list(folder.iterdir())) == 2


# ----------------------------------------------------------------- the command line
def test_the_cli_resumes_a_killed_training_to_the_same_weights(
    cli, corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    code, _, err = cli("train", RNN, "--task", "rnn", "--data", corpus_dir, *FLAGS, "--out", whole)
    assert code == 0, err
    write_log = final_language.write_log

    def kill_after_2(path: Path, rows: list[dict], *, append: bool = False) -> None:
        if append and rows[0]["epoch"] == 2:  # the log line is written after the checkpoint
            raise KeyboardInterrupt
        write_log(path, rows, append=append)

    monkeypatch.setattr(final_language, "write_log", kill_after_2)
    code, _, err = cli("train", RNN, "--task", "rnn", "--data", corpus_dir, *FLAGS, "--out", cut)
    assert code == 130 and not (cut / "metrics.json").exists()
    assert err.strip() == (
        "autoshrink: training stopped by SIGINT; continue it with the same command and --resume "
        f"(from the checkpoint of epoch 2 in {cut})"
    )
    assert len((cut / "log.jsonl").read_text().splitlines()) == 1
    monkeypatch.setattr(final_language, "write_log", write_log)
    code, _, err = cli("train", RNN, "--task", "rnn", "--data", corpus_dir, *FLAGS, "--resume",
                       "--out", cut)  # fmt: skip
    assert code == 0, err
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (whole, cut))
    assert b.pop("resumed_from_epoch") == 2 and a.pop("resumed_from_epoch") == 0
    assert a == b
    assert (cut / "log.jsonl").read_text() == (whole / "log.jsonl").read_text()
    wa, wb = (load_file(str(d / "weights.safetensors")) for d in (whole, cut))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture
def finished(cli, corpus_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "lm"
    code, _, err = cli("train", RNN, "--task", "rnn", "--data", corpus_dir, *FLAGS, "--out", out)
    assert code == 0, err
    return out


def test_the_cli_says_each_epochs_time(cli, corpus_dir: Path, tmp_path: Path, caplog) -> None:
    import logging
    import re

    with caplog.at_level(logging.INFO, logger="autoshrink.cli.rnn"):
        code, _, err = cli("train", RNN, "--task", "rnn", "--data", corpus_dir, *FLAGS,
                           "--out", tmp_path / "lm")  # fmt: skip
    assert code == 0, err
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert lines and all(re.fullmatch(r"epoch \d+: .* \(\d+\.\d s\)", m) for m in lines)


def test_json_prints_metrics_json(cli, finished: Path, corpus_dir: Path) -> None:
    code, stdout, err = cli("train", RNN, "--task", "rnn", "--data", corpus_dir, *FLAGS,
                            "--resume", "--json", "--out", finished)  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout) == json.loads((finished / "metrics.json").read_text())


@pytest.mark.parametrize("damage", [{"test_perplexity": None}, {"params": "x"}])
def test_a_resume_of_a_finished_training_writes_a_damaged_metrics_json_again(
    cli, finished: Path, corpus_dir: Path, damage: dict
) -> None:
    """Its summary was printed from the damaged file: a traceback, exit status 1, until
    2026-12-08."""
    before = json.loads((finished / "metrics.json").read_text())
    (finished / "metrics.json").write_text(json.dumps({**before, **damage}))
    code, stdout, err = cli("train", RNN, "--task", "rnn", "--data", corpus_dir, *FLAGS,
                            "--resume", "--out", finished)  # fmt: skip
    assert code == 0, err
    again = json.loads((finished / "metrics.json").read_text())
    assert again == {**before, "resumed_from_epoch": 3}
    assert f"test perplexity {before['test_perplexity']:.2f}" in stdout


def test_the_cli_resumes_from_moved_data(cli, finished: Path, corpus_dir: Path) -> None:
    moved = corpus_dir.rename(corpus_dir.with_name("moved"))  # the data, not its place, counts
    code, stdout, err = cli("train", RNN, "--task", "rnn", "--data", moved, *FLAGS,
                            "--epochs", "4", "--resume", "--out", finished)  # fmt: skip
    assert code == 0, err
    metrics = json.loads((finished / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == 3 and len(metrics["history"]) == 4


def test_the_cli_refuses_a_resume_on_other_text_of_the_same_shape(
    cli, finished: Path, corpus_dir: Path, tmp_path: Path
) -> None:
    """The training lines in reverse order: the same words and token counts, but other word ids
    (first appearance), which the checkpoint's embedding rows would be read as."""
    other = tmp_path / "reversed"
    other.mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        lines = (corpus_dir / name).read_text().splitlines()
        (other / name).write_text("\n".join(lines[::-1] if name == "train.txt" else lines) + "\n")
    a, b = load_text(corpus_dir), load_text(other)
    assert a.ntokens == b.ntokens and a.vocab != b.vocab
    assert [len(a.train), len(a.valid)] == [len(b.train), len(b.valid)]
    before = snapshot(finished)
    code, _, err = cli("train", RNN, "--task", "rnn", "--data", other, *FLAGS, "--epochs", "4",
                       "--resume", "--out", finished)  # fmt: skip
    assert code == 2 and err.count("\n") == 1, err
    assert "epoch 3 is of another run (data.sha256 changed)" in err
    assert snapshot(finished) == before


def test_a_checkpoint_written_before_the_data_digest_still_resumes(
    cli, finished: Path, corpus_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = finished / "checkpoints" / "epoch-0003.json"
    saved = json.loads(state.read_text())
    del saved["run"]["data"]["sha256"]
    state.write_text(json.dumps(saved))
    with caplog.at_level(logging.WARNING):
        code, _, err = cli("train", RNN, "--task", "rnn", "--data", corpus_dir, *FLAGS,
                           "--epochs", "4", "--resume", "--out", finished)  # fmt: skip
    assert code == 0, err
    assert "does not record data.sha256" in caplog.text
    assert json.loads((finished / "metrics.json").read_text())["resumed_from_epoch"] == 3


def test_a_checkpoint_whose_history_is_damaged_is_one_line(
    cli, finished: Path, corpus_dir: Path
) -> None:
    # it went into metrics.json as it was
    (finished / "metrics.json").unlink()
    state = finished / "checkpoints" / "epoch-0003.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "history": "x"}))
    before = snapshot(finished)
    code, _, err = cli("train", RNN, "--task", "rnn", "--data", corpus_dir, *FLAGS,
                       "--resume", "--out", finished)  # fmt: skip
    assert code == 2 and err.count("\n") == 1, err
    assert "epoch-0003.json: a damaged checkpoint, it cannot be restored (its history is" in err
    assert snapshot(finished) == before


@pytest.mark.parametrize(
    ("change", "named"),
    [(["--nhid", "16"], "nhid: 8 -> 16"), (["--seed", "1"], "seed: 0 -> 1"),
     (["--lr", "2"], "recipe.lr: 5.0 -> 2.0"), (["--no-asgd"], "recipe.asgd: true -> false")],
)  # fmt: skip
def test_the_cli_refuses_a_resume_of_another_run(
    cli, finished: Path, corpus_dir: Path, change: list[str], named: str
) -> None:
    before = snapshot(finished)
    code, stdout, err = cli("train", RNN, "--task", "rnn", "--data", corpus_dir, *FLAGS, *change,
                            "--resume", "--out", finished)  # fmt: skip
    assert code == 2 and err.count("\n") == 1, err
    assert "of another run" in err and named in err and "epoch 3" in err
    assert "perplexity" not in stdout
    assert snapshot(finished) == before


def test_a_folder_holding_a_training_is_refused_and_resumes_as_it_says(
    cli, finished: Path, corpus_dir: Path
) -> None:
    before = snapshot(finished)
    args = ["train", RNN, "--task", "rnn", "--data", corpus_dir, *FLAGS, "--out", finished]
    code, _, err = cli(*args)
    assert code == 2 and err.count("\n") == 1 and str(finished) in err, err
    assert "continue it with --resume" in err
    assert snapshot(finished) == before
    metrics = json.loads((finished / "metrics.json").read_text())
    code, stdout, err = cli(*args, "--resume")  # what the message says works
    assert code == 0, err
    # the training had ended: kept as it was (it was rewritten as resumed from epoch 3)
    assert json.loads((finished / "metrics.json").read_text()) == metrics
    assert metrics["resumed_from_epoch"] == 0
    assert f"test perplexity {metrics['test_perplexity']:.2f}" in stdout


def test_a_finished_folder_without_a_checkpoint_is_refused_with_resume(
    cli, finished: Path, corpus_dir: Path
) -> None:
    for p in (finished / "checkpoints").iterdir():
        p.unlink()
    before = snapshot(finished)
    code, _, err = cli("train", RNN, "--task", "rnn", "--data", corpus_dir, *FLAGS, "--resume",
                       "--out", finished)  # fmt: skip
    assert code == 2 and "no checkpoint to resume from" in err and err.count("\n") == 1, err
    assert snapshot(finished) == before


def test_resume_without_a_checkpoint_starts_from_scratch(
    cli, corpus_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "fresh"
    with caplog.at_level(logging.WARNING, logger="autoshrink.training.language"):
        code, _, err = cli("train", RNN, "--task", "rnn", "--data", corpus_dir, *FLAGS,
                           "--resume", "--out", out)  # fmt: skip
    assert code == 0, err
    assert "no checkpoint to resume from; training starts from scratch" in caplog.text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == 0 and len(metrics["history"]) == 3
    assert math.isfinite(metrics["test_perplexity"])
    assert latest_epoch(out / "checkpoints") == 3
    assert len((out / "log.jsonl").read_text().splitlines()) == 3
