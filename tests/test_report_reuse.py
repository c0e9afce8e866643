"""A step that re-proposes a cell an earlier step evaluated: the search takes the earlier
result without training it again, journals a ``reuse`` record, and the report counts the cell
among the step's candidates (and as the step's choice when it wins).

Removing an edge can prune a node, so the same cell is reachable by two removal paths; with the
instant evaluator below (accuracy a hash of the cell's key) the run of seed 13 meets six such
re-proposals, and three of them win their step.
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from autoshrink.config import SearchConfig
from autoshrink.errors import AutoshrinkError
from autoshrink.evaluators.base import Evaluation
from autoshrink.graph import Cell
from autoshrink.objectives import Score
from autoshrink.report.compare import write_comparison
from autoshrink.report.folder import write_report
from autoshrink.report.reading import read_run
from autoshrink.search import run_search


class HashEvaluator:
    """Instant and deterministic: accuracy in [0.5, 1) from the cell's key, MACs from edges."""

    def __init__(self) -> None:
        self.calls = 0

    def profile(self, cell: Cell) -> dict[str, float]:
        return {"macs": 1e5 * (1 + cell.num_edges), "params": float(cell.num_edges)}

    def evaluate(self, cell: Cell, seed: int) -> Evaluation:
        self.calls += 1
        value = int(hashlib.sha256(cell.key.encode()).hexdigest()[:8], 16) / 16**8
        return Evaluation({**self.profile(cell), "accuracy": 0.5 + 0.5 * value}, "ok", 0.0)


CONFIG = SearchConfig(nodes=5, k=4, keep_fraction=0.0, patience=100, seed=13, score=Score.cnn())


def records(run: Path, kind: str) -> list[dict]:
    lines = (run / "journal.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("type", "candidate") == kind]


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("reuse") / "full"
    run_search(run, CONFIG, evaluator_factory=lambda c: HashEvaluator(), progress=False)
    return run


def test_a_re_proposed_cell_is_journalled_once_per_step_and_not_retrained(full) -> None:
    reuse, trained = records(full, "reuse"), records(full, "candidate")
    assert len(reuse) == 6
    first = {r["key"]: r["step"] for r in trained}
    assert len(first) == len(trained)  # every cell trained once
    for r in reuse:
        assert first[r["key"]] == r["first_step"] < r["step"]
    assert len({(r["step"], r["key"]) for r in reuse}) == len(reuse)
    result = json.loads((full / "result.json").read_text())
    assert result["evaluations"] == len(trained) + len(reuse)


def test_the_report_counts_re_proposed_cells_in_their_steps(full) -> None:
    run = read_run(full)
    assert (
        sum(len(s.candidates) for s in run.steps)
        == json.loads((full / "result.json").read_text())["evaluations"]
    )
    won = [s.step for s in run.steps if s.chosen.first_step is not None]
    assert won  # the report's choice is the search's: the next step shrinks from it
    for before, after in zip(run.steps, run.steps[1:], strict=False):
        parent = before.chosen.cell
        for c in after.candidates:
            assert parent.remove_edge(tuple(c.removed_edge)).key == c.key
    page = write_report(full).read_text()
    first = run.steps[won[0]].chosen.first_step
    assert "re-proposed" in page and f"from step {first}" in page


def test_the_csv_and_the_comparison_count_every_evaluation(full, tmp_path) -> None:
    # as result.json does: a re-proposed cell is an evaluation (of the earlier step's result)
    evaluations = json.loads((full / "result.json").read_text())["evaluations"]
    run = read_run(full)
    assert len(run.ordered) == len(run.best_so_far()) == evaluations
    write_report(full)
    with (full / "report" / "candidates.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == evaluations
    again = [r for r in rows if r["first_step"]]
    assert len(again) == len(records(full, "reuse")) == 6
    scores = {r["key"]: r["score"] for r in rows if not r["first_step"]}
    assert all(r["score"] == scores[r["key"]] and r["seconds"] == "0.0" for r in again)
    other = tmp_path / "full"  # a folder of the same name: the runs are told apart by path
    run_search(other, CONFIG, evaluator_factory=lambda c: HashEvaluator(), progress=False)
    write_comparison([full, other], tmp_path / "cmp")
    table = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [r["candidates"] for r in table["runs"]] == [evaluations, evaluations]
    page = (tmp_path / "cmp" / "index.html").read_text()  # the table's header in words
    assert table["cost"] == "macs" and ">MACs</th>" in page and ">macs</th>" not in page
    assert [r["run"] for r in table["runs"]] == [
        f"{full} (autoshrink, seed 13)",
        f"{other} (autoshrink, seed 13)",
    ]
    with pytest.raises(AutoshrinkError, match=f"{other} is given twice: compare each run once"):
        write_comparison([other, full, other], tmp_path / "cmp")
    # a missing folder said "not a run folder (no config.json)"; a bench folder was refused so
    with pytest.raises(AutoshrinkError, match="missing: no such folder; expected a search run"):
        write_comparison([full, tmp_path / "missing"], tmp_path / "cmp2")
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "bench.json").write_text("{}")
    with pytest.raises(AutoshrinkError, match="bench: a bench output folder; a comparison takes"):
        write_comparison([full, bench], tmp_path / "cmp2")
    assert not (tmp_path / "cmp2").exists()  # refused before its folder was made
    single = tmp_path / "sp"  # said "not a run folder (no config.json)" before
    single.mkdir()
    (single / "settings.json").write_text("{}")
    with pytest.raises(AutoshrinkError, match="sp: a singlepath output folder; a comparison tak"):
        write_comparison([full, single], tmp_path / "cmp2")
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "metrics.json").write_text("{}")
    with pytest.raises(AutoshrinkError, match="trained: a train output folder; .* search run fo"):
        write_comparison([trained, full], tmp_path / "cmp2")
    empty = tmp_path / "empty"  # no command's folder: said "not a run folder" alone before
    empty.mkdir()
    takes = "a comparison takes search run folders"
    said = rf"empty: not a search run folder \(no config.json\); {takes}$"
    with pytest.raises(AutoshrinkError, match=said):
        write_comparison([full, empty], tmp_path / "cmp2")
    ran = tmp_path / "ran"  # a run's own report folder: the run is what to name
    (ran / "report").mkdir(parents=True)
    (ran / "config.json").write_text("{}")
    said = f"{ran / 'report'}: the report folder of run {ran}; {takes}: name {ran}"
    with pytest.raises(AutoshrinkError, match=f"^{re.escape(said)}$"):
        write_comparison([full, ran / "report"], tmp_path / "cmp2")
    assert all(type(r["best_cost"]) is int for r in table["runs"])  # MACs: a count
    assert (
        f"<td>{table['runs'][0]['best_cost']:,}</td>"
        in (tmp_path / "cmp" / "index.html").read_text()
    )


def test_a_resumed_search_writes_the_same_reuse_records(full, tmp_path) -> None:
    lines = (full / "journal.jsonl").read_text().splitlines()
    cut = next(n for n, line in enumerate(lines) if '"type": "reuse"' in line) + 3
    part = tmp_path / "part"
    part.mkdir()
    (part / "config.json").write_text((full / "config.json").read_text())
    (part / "journal.jsonl").write_text("\n".join(lines[:cut]) + "\n")
    evaluator = HashEvaluator()
    run_search(part, resume=True, evaluator_factory=lambda c: evaluator, progress=False)
    trained_before = sum('"type": "candidate"' in line for line in lines[:cut])
    assert evaluator.calls == len(records(full, "candidate")) - trained_before

    def strip(run: Path) -> list[dict]:
        rows = [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert strip(part) == strip(full)


def test_a_comparison_stopped_midway_leaves_no_table_of_other_runs(
    full, tmp_path, monkeypatch
) -> None:
    from autoshrink.report import compare

    other = Path(shutil.copytree(full, tmp_path / "other"))
    out = tmp_path / "cmp"
    compare.write_comparison([full, other], out)
    with monkeypatch.context() as m:  # a kill before the page: the new table beside the old page
        m.setattr(compare.html, "write_page", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            compare.write_comparison([other, full], out)
    assert json.loads((out / "comparison.json").read_text())["status"] == "incomplete"
    compare.write_comparison([other, full], out)  # the folder is still the comparison's
    runs = json.loads((out / "comparison.json").read_text())["runs"]
    assert [r["folder"] for r in runs] == [str(other), str(full)]


def test_runs_of_another_score_are_not_compared(full, tmp_path) -> None:
    params = tmp_path / "params"
    run_search(params, replace(CONFIG, score=Score.cnn(cost="params")),
               evaluator_factory=lambda c: HashEvaluator(), progress=False)  # fmt: skip
    with pytest.raises(AutoshrinkError) as info:
        write_comparison([full, params], tmp_path / "cmp")
    assert str(info.value).startswith(
        "the runs score differently (full (autoshrink, seed 13): cost macs, metric accuracy, "
        "offset 0.0, slope 1.0, weight 0.1; params (autoshrink, seed 13): cost params,"
    )
    assert str(info.value).endswith("compare runs of one --lambda and --cost")
    assert not (tmp_path / "cmp").exists()


def test_runs_that_measure_their_scores_differently_are_compared_with_a_note(
    full, tmp_path, caplog
) -> None:
    other = tmp_path / "other"
    config = replace(CONFIG, dataset="fashion-mnist", training=replace(CONFIG.training, epochs=2))
    run_search(other, config, evaluator_factory=lambda c: HashEvaluator(), progress=False)
    page = write_comparison([full, other], tmp_path / "cmp").read_text()
    said = ('other (autoshrink, seed 13): dataset: "cifar10" -> "fashion-mnist"; '
            "other (autoshrink, seed 13): training.epochs: 20 -> 2")  # fmt: skip
    assert f"against the first, full (autoshrink, seed 13), {said}" in html.unescape(page)
    table = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert table["measured_differently"] == said.split("; ")
    assert "measure their scores differently" in caplog.text
    from autoshrink.training.proxy_settings import OodSettings

    unread = tmp_path / "unread"  # NAS-OoD settings of erm runs: nothing reads them
    run_search(unread, replace(CONFIG, ood=OodSettings(synthetic_mix=0.3)),
               evaluator_factory=lambda c: HashEvaluator(), progress=False)  # fmt: skip
    write_comparison([full, unread], tmp_path / "cmp3")
    assert json.loads((tmp_path / "cmp3" / "comparison.json").read_text())[
        "measured_differently"] == []  # fmt: skip
    seeds = tmp_path / "seed"  # another seed of one setting: nothing to say
    run_search(seeds, replace(CONFIG, seed=14), evaluator_factory=lambda c: HashEvaluator(),
               progress=False)  # fmt: skip
    write_comparison([full, seeds], tmp_path / "cmp2")
    assert json.loads((tmp_path / "cmp2" / "comparison.json").read_text())[
        "measured_differently"] == []  # fmt: skip


class FailingBelow(HashEvaluator):
    """Every cell of fewer than 6 edges fails: the step that meets them keeps no cell."""

    def evaluate(self, cell: Cell, seed: int) -> Evaluation:
        if cell.num_edges < 6:
            return Evaluation({}, "failed", 0.0, {"error": "too small"})
        return super().evaluate(cell, seed)


def test_a_step_none_of_whose_candidates_scored_kept_no_cell(tmp_path) -> None:
    """The search stopped at such a step, at the cell before; the report showed the step's
    best-ranked failure as its chosen cell (picture, row, "edges left now") and "finished"."""
    run = tmp_path / "run"
    result = run_search(run, CONFIG, evaluator_factory=lambda c: FailingBelow(), progress=False)
    assert result.stopped and "failed" in result.stopped
    data = read_run(run)
    last = data.steps[-1]
    assert last.decided and not last.kept and data.kept_steps == data.steps[:-1]
    page = write_report(run).read_text()
    assert f"ended early: {html.escape(result.stopped)}" in page
    edges_left = data.kept_steps[-1].chosen.num_edges
    assert f"<dt>edges left now</dt><dd>{edges_left}</dd>" in page
    assert f"step_{last.step:03d}.svg" not in page
    assert "none scored: no cell kept" in page


def test_a_journal_without_the_best_cell_of_result_json_is_refused(full, tmp_path) -> None:
    """A missing or cut journal gave a "finished" page with other numbers and exit 0."""
    run = tmp_path / "run"
    shutil.copytree(full, run)
    (run / "journal.jsonl").write_text("".join(
        line + "\n" for line in (full / "journal.jsonl").read_text().splitlines()[:4]
    ))  # fmt: skip
    best = json.loads((run / "result.json").read_text())["best"]["key"]
    with pytest.raises(AutoshrinkError, match=f"holds no record of the best cell {best} that"):
        read_run(run)
    (run / "journal.jsonl").unlink()
    with pytest.raises(AutoshrinkError, match="result.json says the search ended, but it has no"):
        read_run(run)


def test_a_comparison_labels_runs_by_their_folders_own_names(full, tmp_path, monkeypatch) -> None:
    """ "." was labelled " (autoshrink, seed 13)", a "$" in a name crashed matplotlib."""
    other = tmp_path / "m$\\frac$x"
    shutil.copytree(full, other)
    monkeypatch.chdir(full)
    write_comparison([".", other], tmp_path / "cmp")
    table = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["runs"]
    assert [r["run"].split(" (")[0] for r in table] == ["full", other.name]
    assert table[0]["folder"] == str(full.resolve())
