"""A comparison of several search runs on one page: ``OUT/index.html``.

For runs of one task -- AutoShrink and its baselines at equal budgets, or seeds of one
strategy -- it shows the best score against candidates evaluated, one line per run, a table of
each run's strategy, seed, candidates and best cell (score, quality, cost, edges), and the best
cells' pictures; ``OUT/comparison.json`` holds the table for other tools. Runs that score
differently (or of other tasks) are refused; runs whose scores measure differently -- another
data set, proxy training or objective (:data:`MEASURED_BY`) -- are shown with a note naming
the differences. It reads the run
folders (also while they run) and writes only into ``OUT``: a new folder, an earlier
comparison's, or one without files of the names it writes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from autoshrink.atomic_write import write_json
from autoshrink.errors import AutoshrinkError
from autoshrink.nouns import count
from autoshrink.outputs import claim_folder, holder, mark_unfinished
from autoshrink.report import html
from autoshrink.report.labels import label as display_label
from autoshrink.report.picture import render
from autoshrink.report.plots import plot_comparison
from autoshrink.report.reading import CONFIG, RunData, read_run
from autoshrink.report.run_report import REPORT_DIR, forget_pictures
from autoshrink.settings_diff import differences, first_three
from autoshrink.user_files import require_folder

log = logging.getLogger(__name__)

#: The files a comparison writes into its folder (and ``cells/``, the best cells' pictures).
PAGE, PROGRESS, TABLE = "index.html", "progress.svg", "comparison.json"


def _score_text(run: RunData) -> str:
    """The run's score settings in a line: ``cost macs, metric accuracy, ..., weight 0.1``."""
    return ", ".join(f"{name} {value}" for name, value in sorted(run.score.items()))


#: The settings that decide what a score measures beside the score's own (which must be one):
#: the proxy data and its training, the network's width, the objective and its test domain.
#: Runs that differ in one still make a page, which names the differences first.
MEASURED_BY = (
    *("dataset", "per_class", "val_size", "width", "training"),
    *("objective", "test_domain"),
)


def measured_differently(runs: dict[str, RunData]) -> list[str]:
    """The :data:`MEASURED_BY` settings of each run that differ from the first run's, as
    ``"label: setting: first -> this"``; the NAS-OoD settings (``ood``) too where either run
    has that objective (others do not read them)."""
    (_, first), *others = runs.items()
    found = []
    for label, run in others:
        ood = "ood" in (first.config.get("objective"), run.config.get("objective"))
        for key in (*MEASURED_BY, "ood") if ood else MEASURED_BY:
            for change in differences(first.config.get(key), run.config.get(key), key):
                found.append(f"{label}: {change}")
    return found


def _label(run: RunData, name: str) -> str:
    config = run.config
    name = name.encode("utf-8", "replace").decode("utf-8")  # a non-UTF-8 name
    return f"{name} ({config.get('strategy', 'autoshrink')}, seed {config.get('seed')})"


#: What the output folder of another command than ``search`` has instead of a comparison.
OWN_PAGE = {
    "bench": "a bench's own report compares its strategies: autoshrink report FOLDER",
    "singlepath": "a Single-Path search has a report of its own: autoshrink report FOLDER",
    "report": "it holds a comparison page already",
}


#: What the comparison's "Best cells" section says where no run has a scored candidate.
NO_BEST = "No run has a scored candidate (each was rejected, failed or diverged): no best cell."


def not_a_run(folder: Path) -> str:
    """What ``folder``, without a ``config.json``, is instead of a search run folder, and that
    a comparison takes those: another command's output folder, a run's ``report/``, or
    neither."""
    takes = "a comparison takes search run folders"
    found = holder(folder)
    if found is not None and found[0] != "search":
        own = f" ({OWN_PAGE[found[0]]})" if found[0] in OWN_PAGE else ""
        return f"a {found[0]} output folder; {takes}{own}"
    run = folder.absolute().parent
    if folder.absolute().name == REPORT_DIR and (run / CONFIG).exists():
        return f"the report folder of run {run}; {takes}: name {run}"
    return f"not a search run folder (no {CONFIG}); {takes}"


def check_run_dirs(run_dirs: Sequence[str | Path]) -> None:
    """Refuse fewer than 2 folders, a folder named twice, and one that is not a search's run
    folder (another command's output folder named as such), each with an
    :class:`AutoshrinkError`."""
    if len(run_dirs) < 2:
        raise AutoshrinkError(f"a comparison needs at least 2 run folders, got {len(run_dirs)}")
    seen: set[Path] = set()
    for d in map(Path, run_dirs):
        require_folder(d, AutoshrinkError, "a search run folder")
        if not (d / CONFIG).exists():
            raise AutoshrinkError(f"{d}: {not_a_run(d)}")
        if d.resolve() in seen:
            raise AutoshrinkError(f"{d} is given twice: compare each run once")
        seen.add(d.resolve())


def check_comparable(runs: Mapping[str, RunData]) -> None:
    """Refuse runs (by label) whose scores do not compare: of two tasks, or scored with
    another weight or cost."""
    tasks = {run.config.get("task", "cnn") for run in runs.values()}
    if len(tasks) > 1:
        raise AutoshrinkError(f"the runs mix tasks {sorted(tasks)}: their scores do not compare")
    scores = {label: _score_text(run) for label, run in runs.items()}
    if len(set(scores.values())) > 1:
        differ = "; ".join(f"{label}: {text}" for label, text in scores.items())
        raise AutoshrinkError(
            f"the runs score differently ({differ}): their scores do not compare; compare runs "
            "of one --lambda and --cost"
        )


#: The commands whose output folders ``autoshrink report FOLDER`` writes a page of into
#: ``FOLDER/report``.
REPORTED = ("search", "bench", "singlepath")


def check_not_a_report_folder(out: Path) -> None:
    """Refuse an ``out`` that is the ``report/`` of a folder ``autoshrink report FOLDER`` writes
    a page of (a search run, bench or Single-Path folder): its page would replace the
    comparison's ``index.html`` and ``progress.svg`` and leave its ``comparison.json``."""
    where = out.absolute()  # "." in RUN/report too
    found = holder(where.parent)
    if where.name == REPORT_DIR and found is not None and found[0] in REPORTED:
        raise AutoshrinkError(
            f"--out {out} is where `autoshrink report {where.parent}` writes that folder's own "
            "page; choose another --out"
        )


def write_comparison(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Write the comparison page of ``run_dirs`` into ``out``; returns ``out/index.html``."""
    check_run_dirs(run_dirs)
    check_not_a_report_folder(Path(out))
    out = claim_folder(out, "report", writes=(PAGE, PROGRESS, "cells", TABLE))
    read = [read_run(Path(d).resolve()) for d in run_dirs]  # ".": named by its own name
    names = [run.run_dir.name for run in read]
    runs = {  # runs in folders of one name (a/demo, b/demo) are told apart by their paths
        _label(run, str(run.run_dir) if names.count(name) > 1 else name): run
        for run, name in zip(read, names, strict=True)
    }
    check_comparable(runs)
    measured = measured_differently(runs)
    if measured:
        log.warning(
            "the runs measure their scores differently (against the first, %s: %s)",
            next(iter(runs)), first_three(measured),
        )  # fmt: skip
    html.page_folder(out)
    mark_unfinished(out / TABLE, "report")  # until the page: its table never outruns it
    first = next(iter(runs.values()))
    quality = first.quality
    cost = str(first.score.get("cost") or "macs")
    fig = plot_comparison(runs, out / PROGRESS)
    caption = "The best score after each candidate, in the order each search evaluated them."
    sections = [("Best score against candidates", html.figure(fig, out, caption))]
    if measured:
        text = (
            f"The runs measure their scores differently: against the first, {next(iter(runs))}, "
            f"{'; '.join(measured)}. Their scores do not compare as they stand."
        )
        sections.insert(0, ("", html.note(text)))
    rows, figures, pictures = [], [], set()
    for i, (label, run) in enumerate(runs.items()):
        best = run.best
        rows.append(
            {
                "run": label,
                "folder": str(run.run_dir),
                "status": run.status,
                "candidates": len(run.ordered),  # result.json's evaluations
                "best_score": best.score if best else None,
                "best_quality": best.metric(quality) if best else None,
                "best_cost": best.metric(cost) if best else None,
                "edges": best.num_edges if best else None,
            }
        )
        if best is not None:
            pic = render(best.cell, out / "cells" / f"run_{i}.svg", title=label)
            pictures.add(pic)
            caption = f"{label}: score {best.score:.4f}"
            figures.append(html.figure(pic, out, caption, natural_size=True))
    forget_pictures(out / "cells", "run_", keep=pictures)  # an earlier comparison's runs
    header = ["run", "status", "candidates", "best score"]
    header += [display_label(quality), display_label(cost), "edges"]
    columns = ("run", "status", "candidates", "best_score", "best_quality", "best_cost", "edges")
    table = [[row[key] for key in columns] for row in rows]
    sections.append(("Runs", html.table(header, table, left=2)))
    drawn = f'<div class="cells">{"".join(figures)}</div>'
    sections.append(("Best cells", drawn if figures else html.note(NO_BEST)))
    page = out / PAGE
    html.write_page(page, f"Comparison of {count(len(runs), 'run')}", sections)
    table_json = {"quality": quality, "cost": cost, "measured_differently": measured, "runs": rows}
    write_json(out / TABLE, table_json)  # last
    log.debug("wrote %s", page)  # the command line prints where
    return page
