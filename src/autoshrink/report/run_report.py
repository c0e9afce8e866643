"""The report of one search: ``RUN_DIR/report/index.html`` and the pictures it shows.

Sections: a summary (finished, still running or stopped before its end; the best cell so far),
the best score against candidates evaluated, for AutoShrink score / quality / cost per step
(labelled with the edges left), quality against cost of every candidate with the Pareto front,
the best cell and for AutoShrink the chosen cell of every step (Graphviz pictures, text without
Graphviz), the table of steps (AutoShrink) or of the best candidates (baselines), retries of
candidates whose worker died or that ran out of memory, and the resolved config. It reads only
the run folder (see :mod:`autoshrink.report.reading`) and writes only ``report/``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from autoshrink.atomic_write import write_csv
from autoshrink.nouns import count
from autoshrink.report import html
from autoshrink.report.labels import label
from autoshrink.report.picture import render
from autoshrink.report.plots import plot_pareto, plot_progress, plot_steps
from autoshrink.report.reading import Candidate, RunData, Step, read_run

log = logging.getLogger(__name__)

REPORT_DIR = "report"


def _cost_metric(run: RunData) -> str | None:
    """The score's cost term when the journal has it, else any counted cost there is."""
    seen = {k for c in run.candidates for k in c.metrics}
    for name in (run.score.get("cost"), "macs", "params"):
        if name and name in seen:
            return name
    return None


def _cell_picture(c: Candidate, path: Path, title: str) -> Path:
    return render(c.cell, path, title=title)


def _summary(run: RunData, quality: str, cost: str | None) -> str:
    best, steps = run.best, run.steps
    status = {
        "finished": "finished",
        "running": "still running (no result.json yet)",
        "stopped": "stopped before its end (no result.json, no search running): continue it "
        f"with autoshrink search --resume {run.run_dir}",
    }[run.status]
    stopped = (run.result or {}).get("stopped")
    if isinstance(stopped, str):  # the strategy could not go on: the search ended early
        status = f"ended early: {stopped}"
    if run.candidates and not any(c.ok for c in run.candidates) and run.status == "stopped":
        status += (
            "; no candidate has a score: a search whose every candidate is rejected or fails "
            "stops so, and its resume says why again (loosen the constraint, or see the "
            "candidates' statuses)"
        )
    by_status: dict[str, int] = {}
    for c in run.candidates:
        by_status[c.status] = by_status.get(c.status, 0) + 1
    items: list[tuple[str, object]] = [
        ("run folder", str(run.run_dir)),
        ("status", status),
        ("candidates evaluated", len(run.ordered)),
        ("by status", ", ".join(f"{n} {k}" for k, n in sorted(by_status.items())) or "none"),
        ("steps", len(steps)),
        ("training seconds (sum)", f"{sum(c.seconds for c in run.candidates):.1f}"),
        (
            "retries (worker died or out of memory)",
            sum(1 for e in run.events if e.get("event") == "retry"),
        ),
    ]
    if run.reused:
        items.insert(
            3, ("of them re-proposed (an earlier step's result, not retrained)", len(run.reused))
        )
    if best is not None:
        items += [
            ("best score", best.score),
            (f"best {label(quality)}", best.metric(quality)),
            *((f"best {label(part)}", best.metric(part)) for part in _parts(run, quality)),
            (f"best {label(cost)}", best.metric(cost)),
            (
                "best cell",
                f"{edges(best)}, step {best.step}, key {best.key}",
            ),
        ]
    kept = run.kept_steps
    if kept and _shrinks(run):
        items.append(("edges left now", kept[-1].chosen.num_edges))
    if steps and not steps[-1].decided and _shrinks(run):  # a baseline's batches keep no cell
        found = count(len(steps[-1].candidates), "candidate")
        name = "step stopped" if run.status == "stopped" else "step in progress"
        items.append((name, f"step {steps[-1].step}: {found} so far, no cell kept yet"))
    net = (run.result or {}).get("network")
    if isinstance(net, dict) and "image_size" in net:  # (older result.json files have none)
        size = f"{net.get('in_channels')}×{net.get('image_size')}×{net.get('image_size')}"
        where = f"width {net.get('width')}, {size} input, {net.get('num_classes')} classes"
        items.append(("counted in", f"{net.get('macro')} at {where}"))
    elif isinstance(net, dict):  # an rnn cell's language model
        where = f"nhid {net.get('nhid')}, a vocabulary of {net.get('vocab')} words"
        items.append(("counted in", f"{net.get('macro')} at {where}"))
    return html.definitions(items)


def edges(c: Candidate) -> str:
    """A candidate's live edges in words ("1 edge", "6 edges")."""
    return count(c.num_edges, "edge")


#: The metrics that ``--objective ood``'s accuracy blends (evaluators/ood_proxy.py).
OOD_PARTS = ("val_accuracy", "synthetic_accuracy")


def _parts(run: RunData, quality: str) -> tuple[str, ...]:
    """The metrics ``quality`` blends: NAS-OoD's accuracy (``--objective ood``), or none."""
    return OOD_PARTS if run.config.get("objective") == "ood" and quality == "accuracy" else ()


def _blend_note(run: RunData) -> str:
    """What ``--objective ood``'s accuracy is, for the page's readers."""
    mix = (run.config.get("ood") or {}).get("synthetic_mix")
    return html.note(
        "This is a NAS-OoD search (--objective ood): its accuracy, on this page and in the "
        f"score, is the blend (1 − m) · val_accuracy + m · synthetic_accuracy with m = {mix} "
        "(held-out images of the training domains, and the generator's novel domains); "
        "candidates.csv holds both parts."
    )


def _shrinks(run: RunData) -> bool:
    """Whether the run is an AutoShrink search (steps shrink one cell) or a baseline."""
    return run.config.get("strategy", "autoshrink") == "autoshrink"


TOP = 15


def _top_rows(run: RunData, quality: str, cost: str | None) -> list[list[object]]:
    """The :data:`TOP` best-scoring candidates (ties to fewer edges), best first."""
    top = sorted((c for c in run.candidates if c.ok), key=Candidate.rank, reverse=True)[:TOP]
    return [
        [
            c.step,
            c.index,
            c.key,
            c.num_edges,
            c.score,
            c.metric(quality),
            c.metric(cost),
            f"{c.seconds:.1f}",
        ]
        for c in top
    ]


def _going(run: RunData) -> str:
    """What the last step of ``run`` is while it has kept no cell: a stopped search's stopped
    before its end (``search --resume`` continues it), else in progress."""
    return "stopped before its end" if run.status == "stopped" else "in progress"


def _step_rows(steps: list[Step], quality: str, cost: str | None, going: str) -> list[list[object]]:
    """A row per step; the chosen columns of a step that kept no cell (:attr:`Step.kept`: in
    progress, or stopped before its end, as ``going`` says; or none of its candidates scored)
    are empty."""
    rows = []
    for s in steps:
        scores = s.finite()
        counts: dict[str, int] = {}
        for c in s.candidates:
            kind = c.status if c.first_step is None else f"from step {c.first_step}"
            counts[kind] = counts.get(kind, 0) + 1
        mean = sum(scores) / len(scores) if scores else None
        spread = (
            math.sqrt(sum((v - mean) ** 2 for v in scores) / len(scores))
            if mean is not None
            else None
        )
        found = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        if s.kept:
            ch = s.chosen
            removed = "start" if ch.removed_edge is None else "→".join(map(str, ch.removed_edge))
            kept: list[object] = [ch.num_edges, found, removed, ch.score]
            metrics: list[object] = [ch.metric(quality), ch.metric(cost)]
        else:
            now = "none scored: no cell kept" if s.decided else f"so far ({going})"
            kept, metrics = [None, f"{found} {now}", None, None], [None, None]
        seconds = f"{sum(c.seconds for c in s.candidates):.1f}"
        rows.append([s.step, *kept, mean, spread, *metrics, seconds])
    return rows


CANDIDATES_CSV = "candidates.csv"


def write_candidates_csv(run: RunData, path: Path) -> Path:
    """Every candidate in evaluation order, one flat row each (any spreadsheet reads it):
    ``step, index, key, edges, status, score``, one column per metric (the score's quality
    metric always), ``epochs``,
    ``stop_reason``, ``removed_edge`` (``i-j``), ``seconds``, ``first_step`` (for a cell an
    earlier step evaluated, re-proposed and not trained again: that step, and its results),
    ``error`` (why a failed candidate failed: its ``detail.error``); empty cells for missing
    values."""
    fixed = ["step", "index", "key", "edges", "status", "score"]
    last = ["epochs", "stop_reason", "removed_edge", "seconds", "first_step", "error"]
    # an rnn cell's metric "edges" is the edges column: one column of each name; the score's
    # quality metric has its column even where no candidate reached it (all rejected, say)
    found = {m for c in run.candidates for m in c.metrics} | {run.quality}
    metrics = sorted(found - {*fixed, *last})
    header = [*fixed, *metrics, *last]

    def value(v: Any) -> Any:
        return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v

    def row(c: Candidate) -> list[Any]:
        edge = "-".join(map(str, c.removed_edge)) if c.removed_edge else ""
        return (
            [c.step, c.index, c.key, c.num_edges, c.status, value(c.score)]
            + [value(c.metrics.get(m)) for m in metrics]
            + [c.detail.get("epochs", ""), c.detail.get("stop_reason", ""), edge, c.seconds]
            + [value(c.first_step), c.detail.get("error", "")]
        )

    write_csv(path, header, (row(c) for c in run.ordered))
    return path


#: At most this many steps get a picture of their chosen cell: Graphviz takes up to seconds a
#: cell, and a search of 20 nodes keeps ~175 (their 176 pictures took 30 s of a 34 s report,
#: on a page of pictures each as wide as the page); 32 nodes keep ~470.
STEP_PICTURES = 16


def pictured_steps(kept: list[Step]) -> list[Step]:
    """The steps whose chosen cell is drawn: all of up to :data:`STEP_PICTURES`, else one in
    every :func:`picture_stride` from the first, and the last."""
    shown = kept[:: picture_stride(len(kept))]
    return shown if not kept or shown[-1] is kept[-1] else [*shown, kept[-1]]


def picture_stride(steps: int) -> int:
    """Every how many of ``steps`` kept steps one is drawn (see :func:`pictured_steps`)."""
    return 1 if steps <= STEP_PICTURES else math.ceil(steps / (STEP_PICTURES - 1))


def forget_pictures(cells: Path, prefix: str, keep: set[Path]) -> None:
    """Remove the pictures ``PREFIX*`` in ``cells`` that an earlier page drew and this one does
    not link: a run's later report draws other steps (:func:`pictured_steps`), a later
    comparison in the same folder other runs."""
    for path in cells.glob(f"{prefix}*.*"):  # none where the folder is not there
        if path not in keep and path.suffix in (".svg", ".txt", ".png"):
            path.unlink(missing_ok=True)


def _pictures_note(shown: list[Step], kept: list[Step]) -> str:
    """What the pictures leave out, when they leave out any steps."""
    if len(shown) == len(kept):
        return ""
    return html.note(
        f"{len(shown)} of the {len(kept)} steps drawn: one in {picture_stride(len(kept))} "
        f"from step {shown[0].step}, and the last; the table of steps lists them all."
    )


def _shrink_sections(
    run: RunData, out: Path, quality: str, cost: str | None
) -> list[tuple[str, str]]:
    """A shrinking search's steps: the cell chosen at each (pictures in ``out``, of at most
    :data:`STEP_PICTURES` steps), and a table of the steps."""
    figures, pictures = [], set()
    kept = run.kept_steps
    shown = pictured_steps(kept)
    for s in shown:
        ch = s.chosen
        pic = _cell_picture(
            ch, out / "cells" / f"step_{s.step:03d}.svg", f"step {s.step}: {edges(ch)}"
        )
        pictures.add(pic)
        score = f"score {ch.score:.4f}" if ch.ok else f"{ch.status}: no score"
        caption = f"step {s.step}: {edges(ch)}, {score}"
        figures.append(html.figure(pic, out, caption, natural_size=True))
    forget_pictures(out / "cells", "step_", keep=pictures)
    header = [
        "step",
        "edges left",
        "candidates",
        "removed edge",
        "chosen score",
        "mean score",
        "std score",
        f"chosen {label(quality)}",
        f"chosen {label(cost)}",
        "train s",
    ]
    return [
        (
            "Chosen cell at each step",
            _pictures_note(shown, kept) + f'<div class="cells">{"".join(figures)}</div>',
        ),
        ("Steps", html.table(header, _step_rows(run.steps, quality, cost, _going(run)))),
    ]


def _retry_sections(run: RunData) -> list[tuple[str, str]]:
    """A table of the candidates run again because their worker died or they ran out of memory;
    none if none was."""
    retries = [e for e in run.events if e.get("event") == "retry"]
    if not retries:
        return []
    rows = [
        [e.get("step"), e.get("index"), e.get("key"), e.get("attempt"), e.get("reason")]
        for e in retries
    ]
    header = ["step", "index", "key", "retry", "reason"]
    title = "Retries (a worker died under a candidate, or it ran out of memory)"
    return [(title, html.table(header, rows, left=0))]


def write_run_report(run_dir: Path) -> Path:
    """Write ``run_dir/report/index.html`` (and its pictures); returns the page's path."""
    run = read_run(run_dir)
    out = Path(run_dir) / REPORT_DIR
    html.page_folder(out)
    quality = run.quality
    higher = float(run.score.get("slope", 1.0)) >= 0
    cost = _cost_metric(run)
    steps, best = run.steps, run.best
    strategy = str(run.config.get("strategy", "autoshrink"))
    shrinks = _shrinks(run)
    title = f"{'AutoShrink' if shrinks else strategy} search: {run.run_dir.resolve().name}"
    table = write_candidates_csv(run, out / CANDIDATES_CSV)
    link = f'<p>Every candidate as a table: <a href="{table.name}">{table.name}</a></p>'
    sections: list[tuple[str, str]] = [("", _summary(run, quality, cost) + link)]
    if _parts(run, quality):
        sections.append(("", _blend_note(run)))
    if run.status == "running":
        sections.append(
            (
                "",
                html.note(
                    "The search is still running: this report shows the "
                    "journal so far; run `autoshrink report` again later."
                ),
            )
        )
    if not steps:
        sections.append(("Steps", html.note("No candidate has finished yet.")))
    else:
        fig = plot_progress(run, out / "progress.svg")
        caption = "Score of every candidate in the order evaluated, and the best score so far."
        sections.append(("Best score against candidates", html.figure(fig, out, caption)))
    kept = run.kept_steps
    if kept and shrinks:
        fig = plot_steps(kept, quality, cost, out / "steps.svg")
        caption = (
            f"Score, {label(quality)} and {label(cost)} of the chosen candidate per step, the "
            "spread (min–max) of the step's candidates as a band, every candidate a dot."
        )
        sections.append(("Score, quality and cost per step", html.figure(fig, out, caption)))
    if steps and cost and any(c.ok for c in run.candidates):
        fig = plot_pareto(run.candidates, quality, cost, higher, best, out / "pareto.svg")
        caption = (
            f"{label(quality)} against {label(cost)} of every candidate that scored; the line "
            "joins the undominated ones (Pareto front, when there are two or more); "
            "the star is the best score."
        )
        sections.append((f"{label(quality)} vs {label(cost)}", html.figure(fig, out, caption)))
    if best is not None:
        what = "best cell" if run.finished else "best cell so far"
        pic = _cell_picture(best, out / "cells" / "best.svg", f"{what}, score {best.score:.4f}")
        caption = f"{what}: step {best.step}, {edges(best)}, score {best.score:.4f}"
        sections.append(("The chosen cell", html.figure(pic, out, caption)))
    if steps and not shrinks:
        header = ["step", "index", "key", "edges", "score", label(quality), label(cost), "train s"]
        rows = _top_rows(run, quality, cost)
        sections.append((f"Best {count(len(rows), 'candidate')}", html.table(header, rows)))
    if steps and shrinks:
        sections += _shrink_sections(run, out, quality, cost)
    sections += _retry_sections(run)
    sections.append(("Resolved config (config.json)", html.pre(json.dumps(run.config, indent=2))))
    page = out / "index.html"
    html.write_page(page, title, sections)
    log.debug("wrote %s", page)  # the command line prints where
    return page
