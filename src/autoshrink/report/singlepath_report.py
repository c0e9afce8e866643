"""The report of a Single-Path search folder (``autoshrink singlepath --out DIR``).

Reads ``decisions.jsonl`` (and ``result.json`` once the search has ended); writes
``DIR/report/index.html``: every searchable layer's choice after each epoch (one row per
layer, one column per epoch), the epochs' loss, validation accuracy and predicted latency, and
the found network with its predicted and measured latency. Works while the search runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autoshrink.errors import AutoshrinkError
from autoshrink.report import html

DECISIONS, RESULT = "decisions.jsonl", "result.json"


def read_decisions(folder: Path) -> list[dict[str, Any]]:
    """The epochs of ``folder/decisions.jsonl``; a one-line error for a malformed line."""
    rows = []
    for i, line in enumerate((folder / DECISIONS).read_text().splitlines(), 1):
        try:
            row = json.loads(line)
            rows.append({"epoch": int(row["epoch"]), **row})
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise AutoshrinkError(f"{folder / DECISIONS}: line {i} is malformed ({err})") from None
    return rows


def decision_table(rows: list[dict[str, Any]]) -> str:
    """Layers down, epochs across: each layer's choice after each epoch."""
    n = max((len(r.get("layers", [])) for r in rows), default=0)
    header = ["layer", *(f"epoch {r['epoch']}" for r in rows)]
    body = [
        [str(i), *(r["layers"][i]["choice"] if i < len(r["layers"]) else "" for r in rows)]
        for i in range(n)
    ]
    return html.table(header, body, left=1)


def write_singlepath_report(folder: str | Path) -> Path:
    """Write ``folder/report/index.html``; returns its path."""
    folder = Path(folder)
    rows = read_decisions(folder)
    out = html.page_folder(folder / "report")
    epochs = html.table(
        ["epoch", "train loss", "blended ms", "predicted ms", "val accuracy", "seconds"],
        [
            [r["epoch"], r.get("train_loss"), r.get("blended_ms"), r.get("predicted_ms"),
             r.get("val_accuracy"), r.get("seconds")]
            for r in rows
        ],
    )  # fmt: skip
    sections = [("Decisions per layer over epochs", decision_table(rows)), ("Epochs", epochs)]
    if (folder / RESULT).is_file():
        r = json.loads((folder / RESULT).read_text())
        items = [
            (k, r.get(k))
            for k in ("predicted_ms", "measured_ms", "relative_error", "latency_target_ms",
                      "val_accuracy", "params", "macs", "search_seconds", "images_trained")
        ]  # fmt: skip
        found = html.pre(", ".join(r.get("layers", []))) + html.definitions(items)
        sections.append(("The found network", found))
    else:
        sections.append(("The found network", html.note("the search has not ended yet")))
    page = out / "index.html"
    page.write_text(html.page(f"Single-Path search {folder.name}", sections), encoding="utf-8")
    return page
