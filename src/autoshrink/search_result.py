"""What a search ends with: :class:`SearchResult`, and ``result.json`` (:func:`write_result`),
with the best cell's files beside it and the network its costs were counted in
(:func:`network_settings`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoshrink.atomic_write import write_json
from autoshrink.config import SearchConfig
from autoshrink.cost.rnn import RNNSpec
from autoshrink.errors import CellError, os_error_line
from autoshrink.graph import Cell
from autoshrink.report.picture import render
from autoshrink.run_folder import BEST_CELL, BEST_PICTURE, RESULT
from autoshrink.spaces.macros import MacroSpec
from autoshrink.strategies.base import Observation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchResult:
    """The outcome of a search: the best observation and where things were written."""

    best: Observation
    start: Observation | None
    run_dir: Path
    evaluations: int
    trained: int
    seconds: float
    stopped: str | None = None  # why the strategy stopped early (every candidate failed)
    # images every journalled candidate saw in training (detail "images_trained"), all sessions;
    # None when the evaluator does not report it (RNN proxy); screening: what ranked the steps
    images_trained: int | None = None
    screening: dict[str, Any] | None = None
    ended: str | None = None  # why the search ended, in a few words (the strategy's)
    config: SearchConfig | None = None  # the config it ran with (its score, say)

    @property
    def cell(self) -> Cell:
        """The best cell of the whole trajectory."""
        return self.best.proposal.genotype


def draw_best(result: SearchResult) -> Path | None:
    """Draw the best cell into the run folder; ``None`` (a warning) where it cannot."""
    title = f"best cell, score {result.best.score:.4f}"
    try:
        return render(result.cell, result.run_dir / BEST_PICTURE, title=title)
    except OSError as err:  # the results matter more than their picture
        log.warning("%s; result.json is written without a picture", os_error_line(err))
        return None


def restore_best(result: SearchResult) -> None:
    """Write an ended search's ``best_cell.json`` again where it is gone or does not hold the
    journal's best cell (cut short, edited), and its picture where it is gone; ``result.json``
    is the session's that ended it, kept as it was."""
    path = result.run_dir / BEST_CELL
    if not path.exists():
        result.cell.save(path)
        log.info("%s was gone: written again from the journal", path)
    elif not holds_cell(path, result.cell):
        result.cell.save(path)
        log.warning("%s did not hold the best cell: written again from the journal", path)
    if not (result.run_dir / BEST_PICTURE).exists():
        draw_best(result)


def holds_cell(path: Path, cell: Cell) -> bool:
    """Whether the cell file ``path`` reads as ``cell`` (however it is laid out)."""
    try:
        return Cell.load(path) == cell
    except CellError:
        return False


def images_trained(records: Iterable[dict[str, Any]]) -> int | None:
    """Images the journalled candidates saw in training (``None`` when none reports it)."""
    counts = [r["detail"]["images_trained"] for r in records if "images_trained" in r["detail"]]
    return sum(counts) if counts else None


def write_result(
    result: SearchResult, config: SearchConfig, network: MacroSpec | RNNSpec | None = None
) -> None:
    """Write ``best_cell.json``, its picture and ``result.json`` into the run folder; with
    ``network``, the proxy network the metrics were counted in (and the search's width), the
    settings ``autoshrink count`` takes to count the same."""
    run_dir, best = result.run_dir, result.best
    result.cell.save(run_dir / BEST_CELL)
    picture = draw_best(result)

    def summary(obs: Observation | None) -> dict[str, Any] | None:
        if obs is None:
            return None
        return {
            "key": obs.proposal.genotype.key,
            "step": obs.proposal.step,
            "edges": obs.proposal.genotype.num_edges,
            "score": obs.score,
            "metrics": dict(obs.metrics),
            "cell": obs.proposal.genotype.to_dict(),
        }

    out = {
        "format": "autoshrink.result/1",
        "task": config.task,
        "best": summary(best),
        "start": summary(result.start),
        "evaluations": result.evaluations,
        "trained_this_session": result.trained,
        "seconds_this_session": round(result.seconds, 3),
        "stopped": result.stopped,
        "ended": result.ended,
        "images_trained": result.images_trained,
        "screening": {"mode": config.screening}
        | ({"this_session": result.screening} if result.screening else {}),
        "picture": None if picture is None else picture.name,
        "network": network_settings(network, config),
    }
    write_json(run_dir / RESULT, out)


def network_settings(network: MacroSpec | RNNSpec | None, config: SearchConfig) -> Any:
    """``result.json``'s ``network``: the settings ``autoshrink count`` takes to count a cell
    in the network the search counted it in (``None`` where the evaluator names none). An RNN
    proxy model is ``shrinkrnn-ptb`` at the proxy's ``nhid`` and vocabulary: the same tied
    model."""
    if isinstance(network, RNNSpec):
        return {"macro": "shrinkrnn-ptb", "nhid": network.nhid, "vocab": network.vocab}
    if network is None:
        return None
    return {
        "macro": network.name,
        "width": config.width,
        "image_size": network.image_size,
        "in_channels": network.in_channels,
        "num_classes": network.num_classes,
    }
