"""``autoshrink report``: the static HTML report of a real tiny run, of a run still going, and of
an NB201 bench folder; rendered by a real headless Chromium.

The run is the tiny in-process search of tests/test_executors.py (shared through pytest's
session folder). Checks are against the run's own files: the best score of ``result.json``,
the steps of the journal, and the strategy's rule that each step's candidates are the chosen
cell of the step before minus one edge.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from autoshrink.errors import AutoshrinkError
from autoshrink.report.compare import write_comparison
from autoshrink.report.folder import write_report
from autoshrink.report.reading import Candidate, Step, read_run
from test_executors import reference_run


@pytest.fixture
def run_dir(tmp_path, tmp_path_factory) -> Path:
    """A private copy of the finished tiny run."""
    return Path(shutil.copytree(reference_run(tmp_path_factory), tmp_path / "run"))


def images(page: Path) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page.read_text())


def assert_images_exist(page: Path) -> None:
    refs = images(page)
    assert refs, "the page shows no image"
    for ref in refs:
        assert not ref.startswith(("/", "http:", "https:")), ref  # opens from disk, anywhere
        assert (page.parent / ref).is_file(), ref


def test_report_of_a_finished_run(run_dir):
    event = {"type": "event", "event": "retry", "step": 1, "index": 0, "key": "abc"}
    event |= {"seed": 1, "attempt": 1, "reason": "worker 42 died (exit code -9)"}
    # an out-of-memory retry is journalled alike: the summary's label said "worker died"
    oom = event | {"attempt": 2, "reason": "CUDA out of memory. Tried to allocate 2.00 GiB"}
    with open(run_dir / "journal.jsonl", "a") as f:
        f.write(json.dumps(event) + "\n" + json.dumps(oom) + "\n")
    page = write_report(run_dir)
    assert page == run_dir / "report" / "index.html"
    assert_images_exist(page)
    text = page.read_text()
    result = json.loads((run_dir / "result.json").read_text())
    assert f"{result['best']['score']:.4f}" in text
    assert "finished" in text and "still running" not in text
    assert "no candidate has a score" not in text  # said only when none has
    best = result["best"]
    assert f"{best['edges']} edges, step {best['step']}" in text
    assert "Score, accuracy and MACs of the chosen candidate per step" in text
    assert "<h2>accuracy vs MACs</h2>" in text and "<dt>best MACs</dt>" in text
    assert "<th>chosen MACs</th>" in text and "macs" not in text.split("<h1>")[1].split("<pre>")[0]
    run = read_run(run_dir)
    records = map(json.loads, (run_dir / "journal.jsonl").read_text().splitlines())
    steps = {r["step"] for r in records if r["type"] == "candidate"}
    assert [s.step for s in run.steps] == sorted(steps)
    assert run.best is not None and run.best.key == result["best"]["key"]
    assert text.count('<img src="cells/step_') == len(steps)
    # each picture opens full size; a box as wide as the picture, not squeezed into 340 px
    assert len(re.findall(r'<figure style="flex-basis: \d+px"><a href="cells/step_', text)) == len(
        steps
    )
    assert {"steps.svg", "pareto.svg", "cells/best.svg"} <= set(images(page))
    assert '"keep_fraction": 0.5' in text  # the resolved config
    net = result["network"]
    assert f"<dt>counted in</dt><dd>cifar-proxy at width {net['width']}, 1×8×8 input" in text
    # the steps table: one row per step, the header first
    table = text.split("<h2>Steps</h2>")[1].split("</table>")[0]
    assert table.count("<tr>") == len(steps) + 1
    assert f"<td>{len(run.steps[0].candidates)} ok</td>" in table  # step 0: the complete cell
    title, retries = text.split("<h2>Retries")[1].split("</h2>", 1)
    assert title == " (a worker died under a candidate, or it ran out of memory)"
    retries = retries.split("</table>")[0]
    assert retries.count("<tr>") == 3 and "worker 42 died (exit code -9)" in retries
    assert "<dt>retries (worker died or out of memory)</dt><dd>2</dd>" in text


def test_candidates_csv_holds_the_journal(run_dir):
    page = write_report(run_dir)
    assert 'href="candidates.csv"' in page.read_text()
    with (run_dir / "report" / "candidates.csv").open() as f:
        rows = list(csv.DictReader(f))
    records = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]
    records = sorted((r for r in records if r["type"] == "candidate"),
                     key=lambda r: (r["step"], r["index"]))  # fmt: skip
    assert [r["key"] for r in rows] == [r["key"] for r in records]
    for row, rec in zip(rows, records, strict=True):
        assert float(row["score"]) == rec["score"] and int(row["edges"]) == rec["edges"]
        assert float(row["accuracy"]) == rec["metrics"]["accuracy"]
        assert row["stop_reason"] == rec["detail"]["stop_reason"]
        edge = rec["removed_edge"]
        assert row["removed_edge"] == ("-".join(map(str, edge)) if edge else "")


def test_a_metric_named_as_a_column_is_one_column(run_dir):
    # rnn cells report a metric "edges", which is the csv's edges column
    journal = run_dir / "journal.jsonl"
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    for r in records:
        if r["type"] == "candidate":
            r["metrics"]["edges"] = float(r["edges"])
    journal.write_text("".join(json.dumps(r) + "\n" for r in records))
    write_report(run_dir)
    with (run_dir / "report" / "candidates.csv").open() as f:
        header = next(csv.reader(f))
    assert header.count("edges") == 1 and len(header) == len(set(header))


def test_chosen_cell_of_each_step_is_the_parent_of_the_next(run_dir):
    steps = read_run(run_dir).steps
    assert len(steps) >= 2
    for before, after in zip(steps, steps[1:], strict=False):
        parent = before.chosen.cell
        for c in after.candidates:
            assert parent.remove_edge(tuple(c.removed_edge)).key == c.key


def _cand(index: int, score: float, edges: int) -> Candidate:
    return Candidate(1, index, f"k{index}", edges, "ok", score, {}, {})


def test_step_choice_follows_the_strategy():
    inf = float("inf")
    assert Step(1, [_cand(0, 0.5, 4), _cand(1, 0.7, 4), _cand(2, 0.7, 3)]).chosen.index == 2
    assert Step(1, [_cand(0, 0.7, 4), _cand(1, 0.7, 4)]).chosen.index == 0  # first of ties
    assert Step(1, [_cand(0, -inf, 4), _cand(1, -inf, 2)]).chosen.index == 1
    assert Step(1, [_cand(0, 0.1, 4), _cand(1, -inf, 4)]).finite() == [0.1]


def test_report_of_a_search_still_running(run_dir):
    (run_dir / "result.json").unlink()
    (run_dir / "run.lock").write_text(f"{os.getpid()}\n")  # a live process holds the folder
    lines = (run_dir / "journal.jsonl").read_bytes().splitlines(keepends=True)
    torn = b"".join(lines[:-1]) + lines[-1][:40]  # the search is writing its last record
    (run_dir / "journal.jsonl").write_bytes(torn)
    page = write_report(run_dir)
    assert (run_dir / "journal.jsonl").read_bytes() == torn  # read-only: nothing was cut
    assert_images_exist(page)
    text = page.read_text()
    assert "still running" in text and "best cell so far" in text
    assert read_run(run_dir).candidates[-1].key != json.loads(lines[-1])["key"]


@pytest.mark.parametrize("lock", [None, "999999999\n"])  # none left, or a dead process's
def test_report_of_a_search_stopped_before_its_end(run_dir, lock):
    (run_dir / "result.json").unlink()
    if lock is not None:
        (run_dir / "run.lock").write_text(lock)
    assert read_run(run_dir).status == "stopped"
    text = write_report(run_dir).read_text()
    assert "still running" not in text and "stopped before its end" in text
    assert f"autoshrink search --resume {run_dir}" in text


def test_report_cli(cli, run_dir, tmp_path):
    code, out, _ = cli("report", run_dir)
    assert code == 0 and out.strip() == f"report: {run_dir / 'report' / 'index.html'}"
    code, _, err = cli("report", tmp_path / "nothing")
    assert code == 2 and err.count("\n") == 1 and "no such folder" in err
    (tmp_path / "notes.txt").write_text("x")
    code, _, err = cli("report", tmp_path / "notes.txt")
    assert code == 2 and "notes.txt: a file, not a folder; expected a run" in err
    code, _, err = cli("report", tmp_path)
    assert code == 2 and "neither a search run folder" in err
    started = tmp_path / "sp"  # a singlepath search in its first epoch: settings.json only
    started.mkdir()
    (started / "settings.json").write_text("{}")
    code, _, err = cli("report", started)
    assert code == 2 and err.strip() == (
        f"autoshrink: error: {started}: its singlepath search has not ended its first epoch "
        "(decisions.jsonl gets a line after each): nothing to report yet"
    )


def test_search_writes_the_report_at_the_end(cli, run_dir):
    (run_dir / "result.json").unlink()  # resume a finished journal: nothing left to train
    code, out, _ = cli(
        "search", "--resume", run_dir, "--executor", "inprocess", "--report", "--no-progress"
    )
    assert code == 0, out
    assert f"report: {run_dir / 'report' / 'index.html'}" in out
    assert "0 trained now" in out
    assert_images_exist(run_dir / "report" / "index.html")


def _write_bench(folder: Path) -> None:
    """A minimal bench folder in the shapes the README documents (two strategies, Q = 4)."""
    folder.mkdir()
    config = {"dataset": "cifar10", "strategies": ["random", "rea"], "runs": 4, "queries": 4}
    config |= {"objective": "score", "weight": 0.1, "seed": 0}
    bench = {"config": config, "optimum": {"index": 1, "arch": "|x|", "accuracy": 94.37}}
    (folder / "bench.json").write_text(json.dumps(bench))
    curves = ["strategy,queries,mean,std,score_mean,score_std"]
    for s, base in (("random", 90.0), ("rea", 91.0)):
        curves += [f"{s},{q},{base + q / 2},0.5,{0.6 + q / 100},0.01" for q in range(1, 5)]
    (folder / "curves.csv").write_text("\n".join(curves) + "\n")
    head = "strategy,queries,runs,mean,std,valid_mean,macs_mean,score_mean,score_std"
    rows = [head, "random,4,4,92.0,0.5,85.0,1e7,0.64,0.01", "rea,4,4,93.0,0.5,86.0,1e7,0.65,0.01"]
    (folder / "results.csv").write_text("\n".join(rows) + "\n")
    pareto = ["strategy,index,arch,macs,accuracy,runs", "random,1,|a|,1e7,90.0,2"]
    pareto += ["random,2,|b|,2e7,92.0,1", "rea,3,|c|,1.5e7,93.0,4"]
    (folder / "pareto.csv").write_text("\n".join(pareto) + "\n")


def test_bench_report(tmp_path):
    folder = tmp_path / "bench"
    _write_bench(folder)
    page = write_report(folder)
    assert_images_exist(page)
    assert set(images(page)) == {"curves.svg", "score.svg", "pareto.svg"}
    text = page.read_text()
    assert "94.37%" in text  # the optimum
    assert sorted(p.name for p in page.parent.iterdir() if p.is_dir()) == []  # no empty cells/
    assert "score optimum" not in text  # an older bench.json has no score_optimum
    table = text.split("Checkpoints (results.csv)")[1].split("</table>")[0]
    assert table.count("<tr>") == 3 and "93.0000" in table


def test_bench_report_shows_the_score_optimum(tmp_path, monkeypatch):
    from autoshrink.report import mpl

    folder = tmp_path / "bench"
    _write_bench(folder)
    bench = json.loads((folder / "bench.json").read_text())
    bench["score_optimum"] = {"index": 7, "arch": "|s|", "score": 0.6741, "macs": 1.5e7}
    (folder / "bench.json").write_text(json.dumps(bench))
    saved: dict[str, object] = {}
    real = mpl.save_figure
    monkeypatch.setattr(mpl, "save_figure", lambda fig, path, **o: (
        saved.__setitem__(Path(path).name, fig), real(fig, path, **o)))  # fmt: skip
    text = write_report(folder).read_text()
    assert "<dt>score optimum</dt><dd>0.6741 (|s|)</dd>" in text
    (ax,) = saved["score.svg"].axes
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert [line.get_label() for line in dashed] == ["optimum 0.6741"]
    assert np.allclose(dashed[0].get_ydata(), 0.6741)


@pytest.mark.parametrize("name", ["curves.csv", "results.csv"])
def test_a_bench_folder_missing_a_table_is_refused(tmp_path, name):
    """bench.json is written last: without one of the tables the page left its sections out
    (or fell back to bench.json's results) and said nothing."""
    folder = tmp_path / "bench"
    _write_bench(folder)
    (folder / name).unlink()
    with pytest.raises(AutoshrinkError, match=f"bench.json is there but {name} is not; restore"):
        write_report(folder)


@pytest.mark.shared_data
def test_bench_report_of_a_real_bench_run(cli, shared_data, tmp_path):
    out = tmp_path / "nb201"
    tables = shared_data / "nats-bench"
    code, _, _ = cli(
        "bench", "nb201", "--tables", tables, "--runs", "3", "--queries", "30", "--out", out
    )
    assert code == 0
    code, _, _ = cli("report", out)
    assert code == 0
    assert_images_exist(out / "report" / "index.html")
    assert "Accuracy vs queries" in (out / "report" / "index.html").read_text()


def chromium() -> str | None:
    return next((p for n in ("chromium", "chromium-browser") if (p := shutil.which(n))), None)


def screenshot(page: Path, shot: Path, width: int, height: int) -> np.ndarray:
    """``page`` as headless Chromium draws it in a window of ``width`` x ``height`` (the test
    is skipped without Chromium): its RGB pixels."""
    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed (bash scripts/install.sh --test installs it)")
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={shot}",
            f"--window-size={width},{height}",
            page.resolve().as_uri(),
        ]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    page = write_report(run_dir)
    assert_images_exist(page)
    pixels = screenshot(page, tmp_path / "shot.png", 1200, 2000)
    assert pixels.shape == (2000, 1200, 3)
    assert pixels.std() > 20, "the screenshot is blank"
    assert (pixels.min(axis=2) < 128).mean() > 0.005  # there is dark text and lines on it
    # the plots' line colour (#1f77b4) is on screen: the SVG images loaded, not only text
    blue = np.abs(pixels - np.array([31, 119, 180])).max(axis=2) < 30
    assert blue.sum() > 200


def test_a_long_value_without_spaces_wraps_inside_the_page(tmp_path):
    # a bench's optimum is a NAS-Bench-201 arch string of ~95 characters without a space (a
    # run folder's path can be as long): it ran off the right edge of a window 1,000 px wide
    from autoshrink.report import html

    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|" * 2
    items = [("optimum", f"94.37% ({arch})"), ("run folder", "/tmp/" + "x" * 150)]
    page = html.write_page(tmp_path / "index.html", "long", [("", html.definitions(items))])
    pixels = screenshot(page, tmp_path / "shot.png", 800, 400)
    dark = pixels.min(axis=2) < 128
    assert dark[:, :400].any()  # the page is drawn
    assert not dark[:, -12:].any(), "text runs off the right edge of the window"


def test_reports_of_runs_in_folders_whose_names_are_not_utf8(run_dir, tmp_path):
    from autoshrink.report.compare import write_comparison

    odd = Path(shutil.copytree(run_dir, tmp_path / "lat\udce9in"))  # a byte that is not UTF-8
    assert "lat?in" in write_report(odd).read_text(encoding="utf-8")
    page = write_comparison([odd, run_dir], tmp_path / "cmp")
    assert "lat?in" in page.read_text(encoding="utf-8")


def test_the_last_step_of_a_stopped_search_keeps_no_cell_yet(run_dir):
    finished = read_run(run_dir)
    last = finished.steps[-1]
    assert all(s.decided for s in finished.steps)
    (run_dir / "result.json").unlink()
    lines = (run_dir / "journal.jsonl").read_text().splitlines(keepends=True)
    cut = [i for i, line in enumerate(lines) if f'"step": {last.step},' in line][0] + 1
    (run_dir / "journal.jsonl").write_text("".join(lines[:cut]))  # killed after one of its cells
    run = read_run(run_dir)
    assert [s.decided for s in run.steps][-2:] == [True, False]
    assert run.kept_steps == run.steps[:-1]
    text = write_report(run_dir).read_text()
    edges_now = run.steps[-2].chosen.num_edges  # the last cell kept, not the step's best so far
    assert f"<dt>edges left now</dt><dd>{edges_now}</dd>" in text
    # no process holds the folder: the step stopped (it was called "in progress")
    assert f"<dt>step stopped</dt><dd>step {last.step}: 1 candidate so far, no cell kept" in text
    assert "so far (stopped before its end)" in text and "in progress" not in text
    assert not (run_dir / "report" / "cells" / f"step_{last.step:03d}.svg").exists()
    from autoshrink.journal import RunLock

    with RunLock(run_dir):  # a live search holds it: the step is in progress
        text = write_report(run_dir).read_text()
    assert f"<dt>step in progress</dt><dd>step {last.step}: 1 candidate so far" in text
    assert "so far (in progress)" in text and "stopped before" not in text


def _journal_up_to(run_dir: Path, step: int) -> list[dict[str, Any]]:
    """Cut the run's journal after its records of ``step`` (the search killed there, or stopped
    with no result.json); the records kept."""
    (run_dir / "result.json").unlink()
    records = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]
    return [r for r in records if r.get("step", 0) <= step]


def _write_journal(run_dir: Path, records: list[dict[str, Any]]) -> None:
    (run_dir / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_a_stopped_searchs_last_step_with_all_its_candidates_is_over(run_dir):
    # killed between two steps: the report said the last step, whose K candidates were all in
    # the journal, was in progress and kept no cell
    steps = read_run(run_dir).steps
    _write_journal(run_dir, _journal_up_to(run_dir, steps[1].step))
    run = read_run(run_dir)
    assert len(run.steps) == 2 and all(s.decided and s.kept for s in run.steps)
    text = write_report(run_dir).read_text()
    assert "step in progress" not in text and "(in progress)" not in text
    assert f"<dt>edges left now</dt><dd>{steps[1].chosen.num_edges}</dd>" in text


def test_a_stopped_search_without_step_0_has_its_first_step_over_when_it_is_complete(tmp_path):
    # score_start=False: the first step (1) removes edges from the complete cell, which no step
    # 0 scored; killed after it, the reader found no step 0 to take the parent from and called
    # step 1 in progress, keeping no cell (with step 0 the same state is over)
    from dataclasses import replace

    from autoshrink.executors.base import InProcessExecutor
    from autoshrink.graph import Cell
    from autoshrink.search import run_search
    from autoshrink.strategies.autoshrink import removal_space
    from test_executors import Fake, tiny_config

    config = replace(tiny_config(), score_start=False)
    run_dir = tmp_path / "run"
    run_search(run_dir, config, evaluator_factory=lambda c: Fake(), executor=InProcessExecutor(),
               progress=False)  # fmt: skip
    kept = _journal_up_to(run_dir, 1)
    first = Cell.from_dict(kept[0]["cell"])
    start = Cell.complete(first.kind, first.ops, first.activation)
    assert len(kept) == min(config.k, len(removal_space(start)))  # step 1 whole
    _write_journal(run_dir, kept)
    run = read_run(run_dir)
    assert [(s.step, s.decided, s.kept) for s in run.steps] == [(1, True, True)]
    cut = kept[:-1]  # one of its candidates still to come: in progress
    _write_journal(run_dir, cut)
    assert [(s.step, s.decided) for s in read_run(run_dir).steps] == [(1, False)]


def test_a_search_stopped_at_a_step_where_every_candidate_diverged_is_not_in_progress(run_dir):
    # no result.json when no candidate has a finite score (exit 2): the report called the step
    # the search stopped at, every candidate of it diverged, "in progress"
    records = _journal_up_to(run_dir, 1)
    for r in records:
        if r["type"] == "candidate":
            r |= {"status": "diverged", "score": None}
    _write_journal(run_dir, records)
    run = read_run(run_dir)
    assert len(run.steps[-1].candidates) == 2  # K = 2 of the 4-node cell's 6 removals
    assert run.steps[-1].decided and not run.steps[-1].kept
    text = write_report(run_dir).read_text()
    assert "step in progress" not in text and "(in progress)" not in text
    assert "2 diverged none scored: no cell kept" in text


def test_a_search_whose_every_candidate_was_rejected_says_so(tmp_path, recwarn):
    from autoshrink.errors import JournalError
    from autoshrink.search import run_search
    from test_search import ToyEvaluator, toy_config

    run = tmp_path / "rejected"
    with pytest.raises(JournalError, match="no candidate finished with a finite score"):
        run_search(run, toy_config(k=2, constraints={"macs": 1.0}),
                   evaluator_factory=lambda c: ToyEvaluator(), progress=False)  # fmt: skip
    text = write_report(run).read_text()
    rejected = len(read_run(run).candidates)
    assert f"<dt>by status</dt><dd>{rejected} rejected</dd>" in text
    assert "no candidate has a score: a search whose every candidate is rejected" in text
    assert not (run / "report" / "pareto.svg").exists()  # an empty front is no figure
    with open(run / "report" / "candidates.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == rejected and all(r["accuracy"] == "" for r in rows)
    assert not [w for w in recwarn if "legend" in str(w.message)]
    other = tmp_path / "rejected too"  # compared, no run has a best cell to draw
    with pytest.raises(JournalError, match="no candidate finished with a finite score"):
        run_search(other, toy_config(k=2, constraints={"macs": 1.0}, seed=1),
                   evaluator_factory=lambda c: ToyEvaluator(), progress=False)  # fmt: skip
    page = write_comparison([run, other], tmp_path / "cmp").read_text()
    cells = page[page.index("Best cells") :]  # an empty heading before
    assert "No run has a scored candidate (each was rejected, failed or diverged)" in cells


def test_without_result_json_the_best_is_the_journals_highest_score(tmp_path):
    """Pins the report's best of a run that has no ``result.json`` (killed, say): the journal's
    highest score, fewer edges on ties, not its last scored candidate."""
    from autoshrink.search import run_search
    from test_search import GOOD, ToyEvaluator, candidates, toy_config

    run = tmp_path / "toy"
    run_search(run, toy_config(), evaluator_factory=lambda c: ToyEvaluator(), progress=False)
    (run / "result.json").unlink()
    rows = [r for r in candidates(run / "journal.jsonl") if r["score"] is not None]
    rows.sort(key=lambda r: (r["step"], r["index"]))
    best = max(rows, key=lambda r: (r["score"], -r["edges"]))
    assert {tuple(e) for e in best["cell"]["edges"]} == GOOD  # the toy's optimum
    assert rows[-1]["key"] != best["key"]  # the search went on past it
    found = read_run(run).best
    assert found is not None and found.key == best["key"]


def test_a_long_search_draws_the_cells_of_some_steps_and_says_so(tmp_path, monkeypatch):
    """A search of many steps (~180 at 20 nodes) draws at most ``STEP_PICTURES`` chosen
    cells, one in every n from the first, and the last, with a note; the table of steps keeps
    every step."""
    from autoshrink.report import run_report
    from autoshrink.report.run_report import pictured_steps
    from autoshrink.search import run_search
    from test_search import ToyEvaluator, toy_config

    run_dir = tmp_path / "toy"
    run_search(run_dir, toy_config(k=2), evaluator_factory=lambda c: ToyEvaluator(),
               progress=False)  # fmt: skip
    kept = read_run(run_dir).kept_steps
    assert len(kept) >= 8
    write_report(run_dir)  # an earlier report drew every step: its pictures are replaced
    assert len(list((run_dir / "report" / "cells").glob("step_*.svg"))) == len(kept)
    monkeypatch.setattr(run_report, "STEP_PICTURES", 4)
    shown = pictured_steps(kept)
    assert len(shown) <= 4 and shown[0] is kept[0] and shown[-1] is kept[-1]
    text = write_report(run_dir).read_text()
    drawn = sorted(p.name for p in (run_dir / "report" / "cells").glob("step_*.svg"))
    assert drawn == [f"step_{s.step:03d}.svg" for s in shown]
    assert text.count('<img src="cells/step_') == len(shown)
    stride = shown[1].step - shown[0].step
    assert f"{len(shown)} of the {len(kept)} steps drawn: one in {stride} from step 0" in text
    table = text.split("<h2>Steps</h2>")[1].split("</table>")[0]
    assert table.count("<tr>") == len(read_run(run_dir).steps) + 1
    for n in range(1, 40):  # at most the cap, the first and the last always among them
        steps = [Step(i, kept[0].candidates) for i in range(n)]
        chosen = pictured_steps(steps)
        assert len(chosen) == n if n <= 4 else 2 <= len(chosen) <= 4
        assert chosen[0] is steps[0] and chosen[-1] is steps[-1]


def test_a_comparison_is_not_written_into_a_run_folders_own_report(run_dir, tmp_path, monkeypatch):
    """``report A B --out A/report`` put the comparison where ``report A`` writes A's page:
    ``report A`` then replaced its index.html and progress.svg and left its comparison.json
    (with A's page there already, the refusal said "which no `autoshrink report` wrote")."""
    from autoshrink.report.compare import write_comparison

    other = Path(shutil.copytree(run_dir, tmp_path / "other"))
    says = r"--out \S+/report is where `autoshrink report \S+` writes that folder's own page"
    with pytest.raises(AutoshrinkError, match=says):
        write_comparison([run_dir, other], run_dir / "report")
    assert not (run_dir / "report").exists()
    write_report(run_dir)
    with pytest.raises(AutoshrinkError, match=says):
        write_comparison([run_dir, other], run_dir / "report")
    assert not (run_dir / "report" / "comparison.json").exists()
    monkeypatch.chdir(run_dir / "report")
    with pytest.raises(AutoshrinkError, match=r"--out \. is where `autoshrink report "):
        write_comparison([run_dir, other], ".")
    assert not (run_dir / "report" / "comparison.json").exists()


def test_a_second_comparison_into_one_folder_leaves_no_picture_of_the_first(run_dir, tmp_path):
    """A second comparison into the same ``--out`` replaces the first (docs/baselines.md): a
    comparison of 3 runs, then of 2, kept the third run's best cell as ``cells/run_2.svg``,
    a picture no page linked, of a run the folder no longer compares."""
    from autoshrink.report.compare import write_comparison

    runs = [run_dir] + [Path(shutil.copytree(run_dir, tmp_path / n)) for n in ("b", "c")]
    out = tmp_path / "cmp"
    write_comparison(runs, out)
    assert len(list((out / "cells").iterdir())) == 3
    page = write_comparison(runs[:2], out)
    linked = {ref for ref in images(page) if ref.startswith("cells/")}
    assert {f"cells/{p.name}" for p in (out / "cells").iterdir()} == linked
    assert len(linked) == 2


def test_candidates_csv_says_why_a_candidate_failed(run_dir):
    # the report counted failed candidates but said nowhere why: a candidate that timed out
    # (--candidate-timeout), whose worker died on every attempt or that raised read alike
    journal = run_dir / "journal.jsonl"
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    failed = next(r for r in records if r["type"] == "candidate" and r["step"] == 1)
    error = "timed out after 600 s (1 attempt)"
    failed |= {"status": "failed", "score": None, "detail": {"error": error, "attempts": 1}}
    failed["metrics"].pop("accuracy")
    journal.write_text("".join(json.dumps(r) + "\n" for r in records))
    write_report(run_dir)
    with (run_dir / "report" / "candidates.csv").open() as f:
        rows = list(csv.DictReader(f))
    said = {r["key"]: (r["status"], r["error"]) for r in rows}
    assert said[failed["key"]] == ("failed", error)
    assert {v for k, v in said.items() if k != failed["key"]} == {("ok", "")}
