"""The folder a final training fills (``autoshrink train --out``), for a CNN and an RNN alike.

Its files' names (:data:`RECIPE`, :data:`CELL`, :data:`ARCHITECTURE`, :data:`VOCABULARY`,
:data:`LOG`, :data:`WEIGHTS`, :data:`METRICS`; the checkpoints are
:data:`~autoshrink.training.checkpoint.CHECKPOINTS`), and what reads and writes them around a
training: :func:`write_inputs` (what it starts from), :func:`write_weights` and
:func:`write_metrics` (its end), :func:`ended_metrics` (the end of a training that had ended
before its ``--resume``), :func:`check_training_resumable` and :func:`forget_start` (undo a
start that trained nothing). The epoch log is written by the trainers themselves
(:func:`~autoshrink.training.final.train_final`,
:func:`~autoshrink.training.final_language.train_final_lm`).

No torch at module level: :mod:`autoshrink.outputs` names the folder's signature files from
here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoshrink.atomic_write import save_tensors, write_json
from autoshrink.errors import ConfigError, TrainingError
from autoshrink.graph import Cell
from autoshrink.user_files import read_json_file

if TYPE_CHECKING:
    import torch

    from autoshrink.data.text import Vocabulary
    from autoshrink.singlepath.space import MBConvArch
    from autoshrink.training.recipes import Recipe

#: The recipe of a CNN training (its file marks the folder as a training's).
RECIPE = "recipe.json"
#: The cell trained (a CNN or an RNN cell).
CELL = "cell.json"
#: The mbconv architecture trained, in place of a cell.
ARCHITECTURE = "architecture.json"
#: An RNN training's vocabulary: its words in id order, the rows of the weights.
VOCABULARY = "vocab.txt"
#: The epoch log: one strict-JSON line per epoch.
LOG = "log.jsonl"
#: The evaluated weights (safetensors), written before the metrics.
WEIGHTS = "weights.safetensors"
#: What the training ended with (scores, counts, history), written last.
METRICS = "metrics.json"

log = logging.getLogger(__name__)


def outputs() -> tuple[str, ...]:
    """Everything a training (CNN or RNN) may write into its folder, checkpoints included:
    the names :func:`~autoshrink.outputs.claim_folder` refuses to write over when another
    program's files hold them."""
    from autoshrink.training.checkpoint import CHECKPOINTS

    return (RECIPE, CELL, ARCHITECTURE, LOG, CHECKPOINTS, WEIGHTS, METRICS, VOCABULARY)


def write_inputs(
    out: Path,
    network: Cell | MBConvArch,
    *,
    recipe: Recipe | None = None,
    vocabulary: Vocabulary | None = None,
) -> None:
    """Write what a training starts from into ``out`` (made if missing), in this order: the
    ``recipe`` (a CNN's; it marks the folder), the cell or mbconv architecture ``network``,
    and the ``vocabulary`` (an RNN's: the weights' rows are its words' ids)."""
    out.mkdir(parents=True, exist_ok=True)
    if recipe is not None:
        recipe.save(out / RECIPE)
    network.save(out / (CELL if isinstance(network, Cell) else ARCHITECTURE))
    if vocabulary is not None:
        vocabulary.save(out / VOCABULARY)


def write_weights(
    out: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Write the evaluated weights ``tensors`` (with ``metadata``) into ``out`` as
    safetensors."""
    save_tensors(out / WEIGHTS, tensors, metadata)


def write_metrics(out: Path, metrics: dict[str, Any]) -> None:
    """Write ``out/metrics.json`` as strict JSON: NaN and inf become ``null``."""
    write_json(out / METRICS, metrics)


def ended_metrics(
    out: Path,
    resumed: bool,
    resumed_from: int,
    epochs: int,
    summary: Callable[[dict[str, Any]], object] | None = None,
) -> dict[str, Any] | None:
    """The ``metrics.json`` in ``out`` of a training that had ended before this ``--resume``
    (``resumed_from`` its last of ``epochs``: nothing trained now), kept as it was, since it
    says how the training ran (its processes, its resumes); ``None`` otherwise -- also when
    the file is not that training's end (an earlier attempt's that diverged, a kill before
    the end's files were written) or is damaged -- not JSON, or ``summary(metrics)`` (what the
    command prints of it) failing on a value missing or of another type: the end is then
    written again."""
    if not (resumed and resumed_from == epochs and (out / METRICS).is_file()):
        return None
    try:
        metrics = read_json_file(out / METRICS, TrainingError, "metrics")
    except TrainingError as err:  # cut short, not JSON
        log.warning("%s; it is written again", err)
        return None
    ended = (
        isinstance(metrics, dict)
        and metrics.get("diverged") is False
        and len(metrics.get("history") or ()) == epochs
        and weights_readable(out / WEIGHTS)
    )
    if not ended:
        return None
    if summary is not None:
        try:
            summary(metrics)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            log.warning(
                "%s is damaged (%s: %s); it is written again",
                out / METRICS,
                type(err).__name__,
                err,
            )
            return None
    log.info("%s: the training had ended; %s is kept as it was", out, METRICS)
    kept: dict[str, Any] = metrics
    return kept


def weights_readable(path: Path) -> bool:
    """Whether ``path`` is there and reads as safetensors (a warning when it is there and does
    not: cut short or damaged)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt"):
            return True
    except (OSError, SafetensorError) as err:
        log.warning("%s is unreadable (%s); it is written again", path, err)
        return False


def check_training_resumable(out: Path) -> None:
    """Refuse ``--resume`` into a folder whose training finished and left no checkpoint (e.g.
    one written before rnn training kept checkpoints): starting it afresh would replace its
    results."""
    from autoshrink.training.checkpoint import CHECKPOINTS, latest_epoch

    if (out / METRICS).exists() and latest_epoch(out / CHECKPOINTS) is None:
        raise ConfigError(
            f"--out {out} holds a training that ended (metrics.json: finished or diverged) and no "
            "checkpoint to resume from; choose another --out"
        )


def forget_start(out: Path, *, resumed: bool, created: bool) -> None:
    """Undo a new training's start that stopped before its first checkpoint: remove what it
    wrote into ``out`` (its inputs and an empty log), and ``out`` itself when this run made it
    (``created``) and it is empty, so that the same command can start again there. Nothing is
    removed after a ``resumed`` start (its inputs are an earlier run's), nor before the start
    wrote its recipe, nor once a checkpoint exists."""
    from autoshrink.training.checkpoint import CHECKPOINTS, latest_epoch

    # a new start's recipe.json is its own (claim_folder refused one already there)
    if resumed or not (out / RECIPE).is_file() or latest_epoch(out / CHECKPOINTS) is not None:
        return
    for name in (RECIPE, CELL, ARCHITECTURE, LOG):
        path = out / name
        if path.is_file() and (name != LOG or path.stat().st_size == 0):
            path.unlink()
    for folder in (out / CHECKPOINTS, *((out,) if created else ())):
        with contextlib.suppress(OSError):  # not empty: something of someone else's stays
            folder.rmdir()
