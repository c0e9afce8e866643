"""The report of a Single-Path search folder (``autoshrink singlepath --out DIR``).

Reads ``decisions.jsonl`` (and ``result.json`` once the search has ended; until then
``run.lock`` tells a running search from a stopped one); writes
``DIR/report/index.html``: every searchable layer's choice after each epoch (one row per
layer, one column per epoch), the epochs' loss, validation accuracy and predicted latency, and
the found network with its predicted and measured latency. Works while the search runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoshrink.errors import AutoshrinkError
from autoshrink.journal import lock_holder
from autoshrink.report import html
from autoshrink.report.labels import label
from autoshrink.report.reading import read_json_lines
from autoshrink.user_files import check_schema, read_json_file

DECISIONS, RESULT = "decisions.jsonl", "result.json"


@dataclass(frozen=True, kw_only=True)
class LayerFields:
    """What the report reads of a layer of a ``decisions.jsonl`` row (a schema, never built)."""

    choice: str


@dataclass(frozen=True, kw_only=True)
class DecisionFields:
    """The JSON types of what the report reads of a ``decisions.jsonl`` row (a schema)."""

    epoch: int
    layers: list[LayerFields]


@dataclass(frozen=True, kw_only=True)
class FoundFields:
    """The JSON types of what the report reads of ``result.json`` (a schema, never built)."""

    layers: list[str] = field(default_factory=list)


def _check_decision(path: Path, line: int, row: dict[str, Any]) -> None:
    check_schema(f"{path}: line {line}", row, DecisionFields, AutoshrinkError)


def read_decisions(folder: Path) -> list[dict[str, Any]]:
    """The epochs of ``folder/decisions.jsonl``; a malformed line is a one-line error naming
    the file and the line, except a torn last line, which is skipped (the search rewrites the
    file after every epoch)."""
    return read_json_lines(folder / DECISIONS, "decisions", _check_decision)


def read_found(folder: Path) -> dict[str, Any]:
    """``folder/result.json``'s object; anything the report cannot read of it is a one-line
    error naming the file (and the field)."""
    result = read_json_file(folder / RESULT, AutoshrinkError, "result")
    check_schema(folder / RESULT, result, FoundFields, AutoshrinkError)
    return dict(result)


def decision_table(rows: list[dict[str, Any]]) -> str:
    """Layers down, epochs across: each layer's choice after each epoch."""
    n = max((len(r["layers"]) for r in rows), default=0)
    header = ["layer", *(f"epoch {r['epoch']}" for r in rows)]
    body = [
        [str(i), *(r["layers"][i]["choice"] if i < len(r["layers"]) else "" for r in rows)]
        for i in range(n)
    ]
    return html.table(header, body, left=1)


def _seconds(value: Any) -> Any:
    """A time in seconds to one decimal (``12.3``; the tables show 4 decimals of a float)."""
    return (
        f"{value:.1f}" if isinstance(value, float | int) and not isinstance(value, bool) else value
    )


def _not_ended(folder: Path) -> str:
    """Why ``folder`` has no ``result.json`` yet: its search is running (a live process holds
    its ``run.lock``), or stopped before its end (killed: only a resume ends it)."""
    if lock_holder(folder) is not None:
        return "the search is still running: run `autoshrink report` again later"
    return (
        "the search stopped before its end (no result.json, no search running): continue it "
        f"with autoshrink singlepath and the settings of its settings.json, --out {folder} "
        "--resume"
    )


def write_singlepath_report(folder: str | Path) -> Path:
    """Write ``folder/report/index.html``; returns its path."""
    folder = Path(folder)
    rows = read_decisions(folder)
    found = read_found(folder) if (folder / RESULT).is_file() else None
    out = html.page_folder(folder / "report")
    columns = ("train_loss", "blended_ms", "predicted_ms", "val_accuracy")
    epochs = html.table(
        ["epoch", *map(label, columns), "time (s)"],
        [[r["epoch"], *(r.get(k) for k in columns), _seconds(r.get("seconds"))] for r in rows],
    )
    sections = [("Decisions per layer over epochs", decision_table(rows)), ("Epochs", epochs)]
    if found is not None:
        items = [
            (label(k), _seconds(found.get(k)) if k == "search_seconds" else found.get(k))
            for k in ("predicted_ms", "measured_ms", "relative_error", "latency_target_ms",
                      "val_accuracy", "params", "macs", "search_seconds", "images_trained")
        ]  # fmt: skip
        text = html.pre(", ".join(found.get("layers", []))) + html.definitions(items)
        sections.append(("The found network", text))
    else:
        sections.append(("The found network", html.note(_not_ended(folder))))
    page = out / "index.html"
    html.write_page(page, f"Single-Path search {folder.name}", sections)
    return page
