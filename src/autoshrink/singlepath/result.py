"""The files of a Single-Path run folder, and the result of an ended search read back from
them (``result.json`` and ``decisions.jsonl``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoshrink.errors import JournalError
from autoshrink.journal import parse_record
from autoshrink.user_files import check_schema, read_json_file, read_text_file

TABLE, ARCH, RESULT, DECISIONS, SETTINGS, WEIGHTS, MODEL = (
    "latency_table.json",
    "architecture.json",
    "result.json",
    "decisions.jsonl",
    "settings.json",
    "weights.safetensors",
    "latency_model.json",
)


#: What a refused ``result.json`` of an ended search adds: a resume without it restores the
#: last checkpoint (no epoch left to train) and writes the search's end again.
REBUILT = (
    "remove it and --resume writes it again from the checkpoints (the found network's latency "
    "measured anew)"
)


@dataclass
class SinglePathResult:
    """What :func:`~autoshrink.singlepath.search.run_singlepath` wrote to ``result.json``."""

    summary: dict[str, Any]
    history: list[dict[str, Any]]


@dataclass(frozen=True, kw_only=True)
class SummaryFields:
    """The JSON types of what is read back of an ended search's ``result.json`` (what the
    command line prints of it); a schema for :func:`~autoshrink.user_files.check_schema`,
    never built."""

    layers: list[str]
    deploy_size: int
    predicted_ms: float
    measured_ms: float
    relative_error: float
    latency_target_ms: float | None
    val_accuracy: float
    params: int
    macs: int
    search_seconds: float
    images_trained: int
    over_target: float | None = None  # not in a result.json written before it was added


def finished_result(out: Path) -> SinglePathResult:
    """The result of the ended search in ``out``: ``result.json`` (checked against
    :class:`SummaryFields`) and ``decisions.jsonl``; a damaged file is a one-line
    :class:`JournalError` naming it (a ``result.json``, with :data:`REBUILT`)."""
    try:
        summary = read_json_file(out / RESULT, JournalError, "result")
        check_schema(out / RESULT, summary, SummaryFields, JournalError, "search's result")
    except JournalError as err:
        raise JournalError(f"{err}; {REBUILT}") from None
    lines = read_text_file(out / DECISIONS, JournalError, "decisions").splitlines()
    history = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            history.append(parse_record(line))
        except ValueError as err:
            raise JournalError(
                f"{out / DECISIONS}: line {n} is not a JSON record ({err})"
            ) from None
    return SinglePathResult(summary, history)
