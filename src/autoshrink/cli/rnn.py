"""The ``--task rnn`` branch of ``autoshrink train``.

Not a sub-command of its own: :mod:`autoshrink.cli.train` calls :func:`add_train_arguments`
and dispatches to :func:`run_train`.

``autoshrink train CELL.json --task rnn --data DIR`` trains the cell's language model on a
PTB-style folder with the DARTS-style recipe of method §7 and writes ``cell.json`` and
``log.jsonl`` (one line per epoch) and ``vocab.txt`` (the words in id order, one per line) as
it starts, ``checkpoints/`` (the newest two epochs) as it
goes, and ``weights.safetensors`` (the tied decoder weight is stored once, as
``encoder.weight``) and ``metrics.json`` (validation and test perplexity, parameters, history)
into ``--out`` at the end. ``--resume`` continues a killed training from its newest checkpoint
and reproduces the uninterrupted run; a checkpoint of another run (cell, data, recipe,
``--nhid``, ``--dropouts``, seed) is refused, naming what changed. The log and the
checkpoints are :func:`~autoshrink.training.final_language.train_final_lm`'s to write, the
other files :mod:`autoshrink.training.train_folder`'s. Its options are declared through
:func:`add_train_arguments` as ``--task rnn``'s own, so that ``train`` refuses them with a cnn
cell.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from autoshrink.cli import count_number
from autoshrink.cli.metrics_file import print_metrics
from autoshrink.cost.rnn import RNNSpec, count_rnn
from autoshrink.data.text import load_text
from autoshrink.devices import resolve_device
from autoshrink.errors import ConfigError, TrainingError
from autoshrink.graph import A_CELL_OF, Cell
from autoshrink.nn.rnn import Dropouts, RNNModel
from autoshrink.nn.tied_weights import to_file
from autoshrink.training.final_language import LMRecipe, train_final_lm
from autoshrink.training.train_folder import (
    WEIGHTS,
    ended_metrics,
    write_inputs,
    write_metrics,
    write_weights,
)

log = logging.getLogger(__name__)

#: Options shared with the cnn branch whose rnn default differs: name -> LMRecipe field.
SHARED = {"batch_size": "batch_size", "lr": "lr", "epochs": "epochs"}
DROPOUT_NAMES = ("output", "hidden", "input", "embedding", "word")
SIDES = ("train", "valid", "test")


def add_train_arguments(option: Callable[..., None]) -> None:
    """Declare the rnn-only options of ``autoshrink train`` through ``option`` (an
    ``add_argument`` that records each option as one of ``--task rnn``'s)."""
    option("--nhid", type=count_number, default=745, help="hidden size = embedding size (tied)")
    option("--bptt", type=count_number, default=LMRecipe.bptt, help="mean BPTT window")
    option(
        "--asgd",
        action=argparse.BooleanOptionalAction,
        default=LMRecipe.asgd,
        help="switch to averaged SGD when validation stops improving",
    )
    option(
        "--dropouts",
        type=float,
        nargs=5,
        metavar=("OUTPUT", "HIDDEN", "INPUT", "EMBEDDING", "WORD"),
        default=[getattr(Dropouts.darts(), name) for name in DROPOUT_NAMES],
        help="dropout rates (method §7)",
    )
    option("--weight-decay", type=float, default=LMRecipe.weight_decay, help="SGD weight decay")
    option(
        "--eval-batch-size",
        type=count_number,
        default=LMRecipe.eval_batch_size,
        help="validation batch",
    )
    option(
        "--test-batch-size", type=count_number, default=LMRecipe.test_batch_size, help="test batch"
    )


def recipe_from_args(args: argparse.Namespace) -> LMRecipe:
    """The recipe: the shared options keep the rnn defaults unless given."""
    given = {
        field: getattr(args, name)
        for name, field in SHARED.items()
        if getattr(args, name) is not None
    }
    return LMRecipe(
        **given,
        bptt=args.bptt,
        asgd=args.asgd,
        weight_decay=args.weight_decay,
        eval_batch_size=args.eval_batch_size,
        test_batch_size=args.test_batch_size,
    )


def run_train(args: argparse.Namespace) -> int:
    """Train an rnn cell's language model on ``--data`` and report validation/test perplexity;
    a training that diverges keeps its best weights and metrics, then raises a TrainingError."""
    cell = Cell.load(args.cell)
    if cell.kind != "rnn":
        raise ConfigError(f"{args.cell}: --task rnn needs an rnn cell, got {A_CELL_OF[cell.kind]}")
    if args.data_dir is None:
        raise ConfigError("--task rnn needs --data DIR, a folder with train/valid/test.txt")
    if args.nhid < 1:
        raise ConfigError(f"--nhid must be >= 1, got {args.nhid}")
    device = str(resolve_device(args.device))
    recipe = recipe_from_args(args)
    dropouts = Dropouts(**dict(zip(DROPOUT_NAMES, args.dropouts, strict=True)))
    corpus = load_text(args.data_dir)
    torch.manual_seed(args.seed)
    model = RNNModel(cell, corpus.ntokens, emsize=args.nhid, nhid=args.nhid, dropouts=dropouts)
    model.to(device)

    since = [time.perf_counter()]  # when the epoch now training started

    def start(history: list[dict[str, Any]]) -> None:  # every check passed; the log is written
        write_inputs(args.out, cell, vocabulary=corpus.vocab)
        since[0] = time.perf_counter()

    def epoch_done(row: dict[str, Any]) -> None:
        now = time.perf_counter()
        log.info(
            "epoch %d: train loss %.4f, validation perplexity %.2f%s (%.1f s)",
            row["epoch"],
            row["train_loss"],
            row["val_perplexity"],
            " (averaged)" if row["averaged"] else "",
            now - since[0],
        )
        since[0] = now

    result = train_final_lm(
        model,
        corpus,
        recipe,
        seed=args.seed,
        device=device,
        out=args.out,
        resume=args.resume,
        run_info={
            "task": "rnn",
            "data": {  # by its shape and contents, not its folder, which may move
                "vocab": corpus.ntokens,
                **{f"{side}_tokens": len(getattr(corpus, side)) for side in SIDES},
                "sha256": corpus.sha256(),  # the same shape in another word order: other ids
            },
            "cell": cell.to_dict(),
            "nhid": args.nhid,
            "dropouts": dropouts.__dict__,
        },
        on_start=start,
        on_epoch=epoch_done,
    )
    summary = partial(summary_text, args.out)
    ended = ended_metrics(args.out, args.resume, result.resumed_from, recipe.epochs, summary)
    if ended is not None:
        return print_summary(args.out, ended, args.json)
    if result.best_epoch > 0:  # weights that were scored; none when the first epoch diverged
        state, ties = to_file(model.state_dict())  # the tied decoder weight: stored once
        write_weights(args.out, state, ties)
    spec = RNNSpec(name="rnn", vocab=corpus.ntokens, emsize=args.nhid, nhid=args.nhid)
    params = count_rnn(cell, spec).params
    metrics = {
        "task": "rnn",
        "data": str(args.data_dir),
        "val_perplexity": result.val_perplexity,
        "test_perplexity": result.test_perplexity,
        "best_epoch": result.best_epoch,
        "asgd_epoch": result.asgd_epoch,
        "diverged": result.diverged,
        "diverged_epoch": result.diverged_epoch,
        "resumed_from_epoch": result.resumed_from,
        "params": params,
        "recipe": {**recipe.__dict__, "dropouts": dropouts.__dict__, "nhid": args.nhid},
        "history": result.history,
    }
    write_metrics(args.out, metrics)
    if result.diverged_epoch is not None:
        kept = "the best epoch's weights" if result.best_epoch else "no weights"
        last = result.history[-1]
        raise TrainingError(
            f"training diverged at epoch {result.diverged_epoch} (train loss "
            f"{last['train_loss']:g}, validation perplexity {last['val_perplexity']:g}): try a "
            f"lower --lr (now {recipe.lr:g}) with another --out; {args.out} keeps metrics.json "
            f"and {kept}"
        )
    return print_summary(args.out, metrics, args.json)


def print_summary(out: Path, metrics: dict[str, Any], as_json: bool = False) -> int:
    """What ``train --task rnn`` prints at its end, read from the run's ``metrics`` (``as_json``:
    the ``metrics.json`` in ``out``); 0."""
    if as_json:
        return print_metrics(out)
    print(summary_text(out, metrics))
    return 0


def summary_text(out: Path, metrics: dict[str, Any]) -> str:
    """The line :func:`print_summary` prints of ``metrics`` (a ``KeyError``, ``TypeError`` or
    ``ValueError`` where they are damaged)."""
    return (
        f"validation perplexity {metrics['val_perplexity']:.2f}, test perplexity "
        f"{metrics['test_perplexity']:.2f} (epoch {metrics['best_epoch']}, {metrics['params']:,} "
        f"params); weights in {out / WEIGHTS}"
    )
