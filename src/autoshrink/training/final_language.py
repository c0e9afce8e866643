"""Final training of a word-level language model (method §7, DARTS-style).

:func:`train_final_lm`: SGD lr 20, batch 64, BPTT lengths drawn around 35 with the learning
rate scaled by length (:func:`autoshrink.training.language.train_epoch`), weight decay 8e-7,
temporal activation regularisation, the dropouts of the model, and an optional switch to
averaged SGD when the validation loss stops improving; the best validation weights give the
test perplexity. In a run folder ``out`` it writes a checkpoint after every epoch
(:mod:`autoshrink.training.checkpoint`: tensors in safetensors, the rest in JSON) and appends
the epoch to ``log.jsonl``, as
:func:`~autoshrink.training.final.train_final` does; ``resume=True`` continues the newest
checkpoint, reproducing the uninterrupted run: the model, the optimiser, the averaged and the
best weights, the history and the numpy and torch generators (window lengths, dropout) are all
restored; a checkpoint of another run (recipe, seed, or what
the caller says the run is) is refused, naming what changed.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autoshrink.data.text import Corpus, batchify
from autoshrink.errors import DataError, JournalError
from autoshrink.nn.tied_weights import TIED, retie, untie
from autoshrink.ranges import check_fields, is_integer
from autoshrink.training.checkpoint import (
    CHECKPOINTS,
    Checkpoint,
    DamagedState,
    check_optimizer_state,
    check_weights_fit,
    checkpoint_to_resume,
    clear_earlier_run,
    flatten_optimizer,
    restored_history,
    restoring,
    run_identity,
    save_checkpoint,
    unflatten_optimizer,
    write_log,
)
from autoshrink.training.language import evaluate_lm, perplexity, train_epoch
from autoshrink.training.train_folder import LOG


@dataclass(frozen=True, kw_only=True)
class LMRecipe:
    """The DARTS-style final recipe of method §7 (the model carries the dropouts)."""

    epochs: int = 30  # the paper trains up to 3000
    batch_size: int = 64
    bptt: int = 35
    max_seq_len_delta: int = 20  # training windows are at most bptt + this long
    lr: float = 20.0
    clip: float = 0.25
    weight_decay: float = 8e-7
    tar: float = 1e-3  # temporal activation regularisation (beta)
    asgd: bool = True  # switch to averaged SGD when validation stops improving
    nonmono: int = 5
    eval_batch_size: int = 10
    test_batch_size: int = 1

    def __post_init__(self) -> None:
        counts = ("epochs", "batch_size", "bptt", "nonmono", "eval_batch_size", "test_batch_size")
        check_fields(
            "training recipe",
            self,
            {
                ">= 1": counts,
                ">= 0": ("max_seq_len_delta",),
                "finite and > 0": ("lr", "clip"),
                "finite and >= 0": ("weight_decay", "tar"),
            },
        )


@dataclass
class FinalLMResult:
    """Best validation perplexity, the test perplexity of those weights, and the history
    (the epoch whose training or validation loss turned NaN/inf, or whose validation
    perplexity overflowed, if one did, is its last row)."""

    val_perplexity: float
    test_perplexity: float
    best_epoch: int
    asgd_epoch: int | None
    diverged_epoch: int | None
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0  # the epoch of the checkpoint it continued (0: a fresh start)

    @property
    def diverged(self) -> bool:
        """Whether training stopped at a NaN/inf loss (or an overflowing perplexity)."""
        return self.diverged_epoch is not None


class WeightAverage:
    """Running mean of a model's parameters from the moment averaging begins: the weights then
    are its first sample, and each later step's weights are added (NT-ASGD's average, as
    AWD-LSTM/DARTS switch to it)."""

    def __init__(self, model: nn.Module) -> None:
        self.params = list(model.parameters())
        self.mean = [p.detach().clone() for p in self.params]
        self.n = 1

    def update(self) -> None:
        """Add the current parameters to the running mean."""
        self.n += 1
        with torch.no_grad():
            for m, p in zip(self.mean, self.params, strict=True):
                m.add_(p - m, alpha=1.0 / self.n)

    def swap(self) -> None:
        """Exchange the live weights with the averaged ones (call twice to undo)."""
        with torch.no_grad():
            for m, p in zip(self.mean, self.params, strict=True):
                tmp = p.detach().clone()
                p.copy_(m)
                m.copy_(tmp)


@dataclass
class _FinalLMState:
    """What :func:`train_final_lm` carries from one epoch to the next besides the model, the
    optimiser and the generators; all of it goes into each checkpoint."""

    best_state: dict[str, torch.Tensor]
    average: WeightAverage | None = None
    asgd_epoch: int | None = None
    best_loss: float = math.inf
    best_epoch: int = 0
    losses: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)


def _lm_snapshot(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    st: _FinalLMState,
    rng: np.random.Generator,
    identity: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The checkpoint of a final LM training: its tensors and its JSON state."""
    live, ties = untie(model.state_dict())
    tensors = {f"model.{k}": v for k, v in live.items()}
    tensors.update({f"best.{k}": v for k, v in st.best_state.items() if k not in ties})
    opt_tensors, opt_rest = flatten_optimizer(opt.state_dict(), "optim")
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    device = next(model.parameters()).device
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    state: dict[str, Any] = {
        **identity,
        TIED: ties,
        "optimizer": opt_rest,
        "numpy_rng": rng.bit_generator.state,
        "asgd_epoch": st.asgd_epoch,
        "average_n": None,
        "best_loss": st.best_loss,
        "best_epoch": st.best_epoch,
        "losses": st.losses,
        "history": st.history,
    }
    if st.average is not None:
        tensors.update({f"average.{i}": m for i, m in enumerate(st.average.mean)})
        state["average_n"] = st.average.n
    return tensors, state


def _lm_restore(
    ckpt: Checkpoint,
    where: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    rng: np.random.Generator,
) -> _FinalLMState:
    """Load a checkpoint written by :func:`_lm_snapshot` into ``model``, ``opt`` and ``rng``;
    returns the rest of the training's state."""
    s = ckpt.state

    def part(prefix: str) -> dict[str, torch.Tensor]:
        n = len(prefix)
        return retie({k[n:]: v for k, v in ckpt.tensors.items() if k.startswith(prefix)}, s[TIED])

    model_state, best_state = part("model."), part("best.")
    check_weights_fit(ckpt, where, (model, model_state), (model, best_state))
    model.load_state_dict(model_state)
    device = next(model.parameters()).device
    optim = unflatten_optimizer(ckpt.tensors, s["optimizer"], "optim")
    check_optimizer_state(opt, optim, "optim", stepped=ckpt.epoch > 0)
    opt.load_state_dict(optim)
    rng.bit_generator.state = s["numpy_rng"]
    generator = ckpt.tensors["rng.torch"]
    if generator.dtype != torch.uint8 or generator.shape != torch.get_rng_state().shape:
        shape = list(generator.shape)
        raise DamagedState(
            f"rng.torch is no state of torch's generator ({generator.dtype}, {shape})"
        )
    torch.set_rng_state(generator)
    if device.type == "cuda" and "rng.cuda" in ckpt.tensors:
        torch.cuda.set_rng_state(ckpt.tensors["rng.cuda"], device)
    return _FinalLMState(
        best_state={k: v.to(device) for k, v in best_state.items()},
        average=_restored_average(ckpt, model),
        asgd_epoch=s["asgd_epoch"],
        best_loss=float(s["best_loss"]),
        best_epoch=int(s["best_epoch"]),
        losses=[float(v) for v in s["losses"]],
        history=restored_history(ckpt),
    )


def _restored_average(ckpt: Checkpoint, model: nn.Module) -> WeightAverage | None:
    """The running average of the weights ``ckpt`` holds (``None`` before averaging began);
    a :class:`DamagedState` unless it holds one tensor of each parameter's shape per
    parameter (``average.<i>``) and a count ``average_n`` >= 1 (a tensor of another shape made
    a ``RuntimeError`` and its traceback)."""
    n = ckpt.state["average_n"]
    if n is None:
        return None
    if not is_integer(n) or n < 1:
        raise DamagedState(f"average_n must be an integer >= 1 or null, got {json.dumps(n)}")
    average = WeightAverage(model)
    saved = sum(k.startswith("average.") for k in ckpt.tensors)
    if saved != len(average.mean):
        raise DamagedState(f"{saved} averaged tensors for {len(average.mean)} parameters")
    with torch.no_grad():
        for i, m in enumerate(average.mean):
            tensor = ckpt.tensors[f"average.{i}"]
            if tensor.shape != m.shape:
                raise DamagedState(
                    f"shape of average.{i} is {list(tensor.shape)}, its parameter's {list(m.shape)}"
                )
            m.copy_(tensor)
    average.n = n
    return average


def _validate(
    model: nn.Module, valid: torch.Tensor, bptt: int, st: _FinalLMState, epoch: int
) -> float:
    """The validation loss of the weights the run scores (the averaged ones once averaging
    has started), kept in ``st`` as the best weights when they beat the best so far."""
    average = st.average
    if average is not None:
        average.swap()
    val_loss = evaluate_lm(model, valid, bptt)
    if val_loss < st.best_loss and math.isfinite(perplexity(val_loss)):  # 800 nats: diverged
        st.best_loss, st.best_epoch = val_loss, epoch
        st.best_state = copy.deepcopy(model.state_dict())
    if average is not None:
        average.swap()
    return val_loss


def _note_validation(
    model: nn.Module, recipe: LMRecipe, st: _FinalLMState, epoch: int, val_loss: float
) -> None:
    """Record an epoch's validation loss; with ``recipe.asgd``, start averaging the weights
    once it is worse than the best of all but the last ``nonmono`` epochs (NT-ASGD)."""
    if (
        recipe.asgd
        and st.average is None
        and len(st.losses) > recipe.nonmono
        and val_loss > min(st.losses[: -recipe.nonmono])
    ):
        st.average, st.asgd_epoch = WeightAverage(model), epoch
    st.losses.append(val_loss)


def _start_log(
    log: Path | None,
    history: list[dict[str, Any]],
    on_start: Callable[[list[dict[str, Any]]], None] | None,
) -> None:
    """Write the ``log`` of the epochs ``history`` holds (a fresh run's is empty) -- first: it
    marks the run folder as a training's --, then call ``on_start(history)``."""
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        write_log(log, history)
    if on_start is not None:
        on_start(list(history))


def _log_epoch(
    log: Path | None, row: dict[str, Any], on_epoch: Callable[[dict[str, Any]], None] | None
) -> None:
    """Append an epoch's ``row`` to the ``log``, then give it to ``on_epoch``."""
    if log is not None:
        write_log(log, [row], append=True)
    if on_epoch is not None:
        on_epoch(row)


def train_final_lm(
    model: nn.Module,
    corpus: Corpus,
    recipe: LMRecipe,
    *,
    seed: int = 0,
    device: str = "cpu",
    out: str | Path | None = None,
    resume: bool = False,
    run_info: dict[str, Any] | None = None,
    on_start: Callable[[list[dict[str, Any]]], None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> FinalLMResult:
    """Train ``model`` on ``corpus.train``; keep the best validation weights; report test.

    On return the model holds the best weights (the averaged ones if they were best). A
    training or validation loss that turns NaN/inf, or a validation perplexity that overflows
    (a finite loss above 709 nats), ends the training after that epoch
    (``diverged_epoch``); the best weights so far are kept.

    ``out``: the run folder for ``log.jsonl`` (one line per epoch, the diverged one included)
    and ``checkpoints/``, as :func:`~autoshrink.training.final.train_final`'s; ``None`` keeps
    nothing. Each finished epoch writes a checkpoint there (the newest two are kept; a
    diverged epoch writes none) -- model, optimiser, averaged weights, best weights, history
    and the numpy and torch generators, so that a resumed run reproduces the one that was not
    interrupted. ``resume``: continue from the newest
    checkpoint there -- refused, with a :class:`~autoshrink.errors.JournalError` naming what
    changed, when its recipe, seed or ``run_info`` (what the run is: cell, data, model sizes;
    JSON) differ from these -- or start fresh, with a warning, when there is none; without it,
    old checkpoints there are removed. ``recipe.epochs`` may grow on a resume: the run goes on
    to the new last epoch exactly as a run that long from the start (nothing depends on the
    number of epochs).
    ``on_start(history)`` is called once the run is set up and a resumed checkpoint restored
    (``history``: its epochs, empty for a fresh run), before anything else is written -- after
    the log of those epochs in ``out``, which marks the folder as a training's;
    ``on_epoch(row)`` gets each epoch's summary, after its checkpoint and its log line.
    """
    if corpus.test is None:
        raise DataError(f"{corpus.name}: loaded without its test split; final training needs it")
    log, folder = (None, None) if out is None else (Path(out) / LOG, Path(out) / CHECKPOINTS)
    dev = torch.device(device)
    rng = np.random.default_rng(seed)
    # Nothing in an epoch depends on how many epochs follow (no schedule over the run), so the
    # length is not part of what the run is: a resume with a larger `epochs` extends the run.
    length_free = {k: v for k, v in asdict(recipe).items() if k != "epochs"}
    identity = run_identity(length_free, seed, run_info)
    ckpt = None if folder is None else checkpoint_to_resume(folder, resume, identity)
    if ckpt is not None and ckpt.epoch > recipe.epochs:
        raise JournalError(
            f"{folder}: the newest checkpoint is of epoch {ckpt.epoch}, beyond epochs "
            f"{recipe.epochs}; resume with epochs >= {ckpt.epoch} or choose another folder"
        )

    def tensor(ids: np.ndarray, b: int, split: str) -> torch.Tensor:
        return torch.from_numpy(batchify(ids, b, f"{corpus.name}: the {split}")).to(dev)

    train = tensor(corpus.train, recipe.batch_size, "train split (--batch-size)")
    valid = tensor(corpus.valid, recipe.eval_batch_size, "valid split (--eval-batch-size)")
    test = tensor(corpus.test, recipe.test_batch_size, "test split (--test-batch-size)")
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    st = _FinalLMState(best_state=copy.deepcopy(model.state_dict()))
    start = 1
    if ckpt is not None and folder is not None:
        with restoring(ckpt, folder):
            st = _lm_restore(ckpt, folder, model, opt, rng)
        start = ckpt.epoch + 1
    _start_log(log, st.history, on_start)
    if folder is not None and start == 1:
        clear_earlier_run(folder)
    diverged_epoch: int | None = None
    for epoch in range(start, recipe.epochs + 1):
        average = st.average
        train_loss = train_epoch(
            model,
            opt,
            train,
            bptt=recipe.bptt,
            clip=recipe.clip,
            rng=rng,
            max_delta=recipe.max_seq_len_delta,
            tar=recipe.tar,
            after_step=average.update if average is not None else None,
            progress=f"epoch {epoch}",
        )
        val_loss = (
            _validate(model, valid, recipe.bptt, st, epoch)
            if math.isfinite(train_loss)
            else math.nan
        )
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_perplexity": math.nan if math.isnan(val_loss) else perplexity(val_loss),
            "averaged": average is not None,
        }
        st.history.append(row)
        # a finite loss whose perplexity overflows (> 709 nats, beyond any vocabulary) too
        finished = math.isfinite(train_loss) and math.isfinite(row["val_perplexity"])
        if finished:
            _note_validation(model, recipe, st, epoch, val_loss)
            if folder is not None:
                save_checkpoint(folder, epoch, *_lm_snapshot(model, opt, st, rng, identity))
        _log_epoch(log, row, on_epoch)
        if not finished:
            diverged_epoch = epoch
            break
    model.load_state_dict(st.best_state)
    test_ppl = perplexity(evaluate_lm(model, test, recipe.bptt)) if st.best_epoch else math.nan
    return FinalLMResult(
        perplexity(st.best_loss),
        test_ppl,
        st.best_epoch,
        st.asgd_epoch,
        diverged_epoch,
        st.history,
        resumed_from=start - 1,
    )
