"""``autoshrink report`` of a damaged bench or singlepath folder: one line naming the file (and
the line or field), exit status 2, no traceback, nothing written; a torn last line of a file
still being written is skipped instead.

The folders are small hand-written ones in the shapes the writers produce (a bench folder as
in tests/test_report.py, a singlepath folder of two epochs), so no search runs here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from test_report import _write_bench

Damage = Callable[[Path], None]


def write(name: str, data: bytes) -> Damage:
    def damage(folder: Path) -> None:
        (folder / name).write_bytes(data)

    return damage


def append(name: str, data: bytes) -> Damage:
    def damage(folder: Path) -> None:
        with open(folder / name, "ab") as f:
            f.write(data)

    return damage


def edit_json(name: str, key: str, field: str, value: object) -> Damage:
    """Set ``name``'s ``[key][field]`` (``key`` empty: the top level) to ``value``."""

    def damage(folder: Path) -> None:
        obj = json.loads((folder / name).read_text())
        (obj[key] if key else obj)[field] = value
        (folder / name).write_text(json.dumps(obj))

    return damage


def edit_line(name: str, line: int, old: str, new: str) -> Damage:
    """Replace ``old`` by ``new`` on line ``line`` (from 1) of the text file ``name``."""

    def damage(folder: Path) -> None:
        lines = (folder / name).read_text().splitlines(keepends=True)
        assert old in lines[line - 1]
        lines[line - 1] = lines[line - 1].replace(old, new, 1)
        (folder / name).write_text("".join(lines))

    return damage


def insert_line(name: str, line: int, text: str) -> Damage:
    """Put ``text`` (and a newline) before line ``line`` (from 1) of the text file ``name``."""

    def damage(folder: Path) -> None:
        lines = (folder / name).read_text().splitlines(keepends=True)
        lines.insert(line - 1, text + "\n")
        (folder / name).write_text("".join(lines))

    return damage


# (damage, the file the message names, what it says about it)
BENCH_CASES: dict[str, tuple[Damage, str, str]] = {
    "bench-not-utf8": (write("bench.json", b"\xff"), "bench.json", "not UTF-8 text"),
    "bench-truncated": (write("bench.json", b'{"config": {'), "bench.json", "not valid JSON"),
    "bench-list": (write("bench.json", b"[]"), "bench.json", "expected a JSON object, got list"),
    "runs-string": (
        edit_json("bench.json", "config", "runs", "abc"),
        "bench.json",
        '"config.runs" must be an integer, got "abc"',
    ),
    "strategies-string": (
        edit_json("bench.json", "config", "strategies", "random"),
        "bench.json",
        '"config.strategies" must be a list, got "random"',
    ),
    "config-null": (
        edit_json("bench.json", "", "config", None),
        "bench.json",
        '"config" must be an object, got null',
    ),
    "optimum-accuracy-string": (
        edit_json("bench.json", "optimum", "accuracy", "x"),
        "bench.json",
        '"optimum.accuracy" must be a number or null, got "x"',
    ),
    "curves-not-utf8": (write("curves.csv", b"\xff\n"), "curves.csv", "not UTF-8 text"),
    "curves-empty": (write("curves.csv", b""), "curves.csv", "empty: no header line"),
    "results-empty": (write("results.csv", b"\n"), "results.csv", "empty: no header line"),
    "curves-short-row": (
        edit_line("curves.csv", 3, ",0.5,0.62,0.01", ""),
        "curves.csv",
        "line 3: 3 values for 6 columns",
    ),
    "curves-mean-text": (
        edit_line("curves.csv", 2, "90.5", "abc"),
        "curves.csv",
        'line 2: "mean" must be a number, got "abc"',
    ),
    "curves-no-mean-column": (
        edit_line("curves.csv", 1, ",mean,", ",average,"),
        "curves.csv",
        "line 1: no column 'mean'",
    ),
    "curves-torn-line-inside": (
        insert_line("curves.csv", 3, "random,2,9"),
        "curves.csv",
        "line 3: 3 values for 6 columns",
    ),
    "results-long-row": (
        edit_line("results.csv", 2, "random,", "random,x,"),
        "results.csv",
        "line 2: 10 values for 9 columns",
    ),
    "results-mean-text": (
        edit_line("results.csv", 2, "92.0", "xyz92.0"),
        "results.csv",
        'line 2: "mean" must be a number, got "xyz92.0"',
    ),
    "results-no-mean-column": (
        edit_line("results.csv", 1, ",mean,", ",average,"),
        "results.csv",
        "line 1: no column 'mean'",
    ),
    "pareto-accuracy-text": (
        edit_line("pareto.csv", 3, "92.0", "high"),
        "pareto.csv",
        'line 3: "accuracy" must be a number, got "high"',
    ),
}

SINGLEPATH_CASES: dict[str, tuple[Damage, str, str]] = {
    "result-malformed": (write("result.json", b"{bad"), "result.json", "not valid JSON"),
    "result-list": (write("result.json", b"[]"), "result.json", "expected a JSON object"),
    "result-not-utf8": (write("result.json", b"\xff"), "result.json", "not UTF-8 text"),
    "result-layers-int": (
        edit_json("result.json", "", "layers", 5),
        "result.json",
        '"layers" must be a list, got 5',
    ),
    "result-layers-objects": (
        edit_json("result.json", "", "layers", [{"x": 1}]),
        "result.json",
        '"layers[0]" must be a string, got {"x": 1}',
    ),
    "decisions-not-utf8": (
        append("decisions.jsonl", b"\xff\n"),
        "decisions.jsonl",
        "not UTF-8 text",
    ),
    "decisions-layers-int": (
        append("decisions.jsonl", b'{"epoch": 3, "layers": 5}\n'),
        "decisions.jsonl",
        'line 3: "layers" must be a list, got 5',
    ),
    "decisions-no-choice": (
        append("decisions.jsonl", b'{"epoch": 3, "layers": [{"x": 1}]}\n'),
        "decisions.jsonl",
        'line 3: "layers[0].choice" is missing',
    ),
    "decisions-epoch-string": (
        append("decisions.jsonl", b'{"epoch": "three", "layers": []}\n'),
        "decisions.jsonl",
        'line 3: "epoch" must be an integer, got "three"',
    ),
    "decisions-not-an-object": (
        insert_line("decisions.jsonl", 2, "[1, 2]"),
        "decisions.jsonl",
        "line 2 is not a JSON record",
    ),
    "decisions-torn-line-inside": (  # torn, but a line follows: damage, not a write going on
        insert_line("decisions.jsonl", 2, '{"epoch": 3, "la'),
        "decisions.jsonl",
        "line 2 is not a JSON record",
    ),
}


def _write_singlepath(folder: Path, *, finished: bool = True) -> None:
    """A singlepath folder of two epochs of a three-layer space in the writer's shapes."""
    folder.mkdir()
    rows = []
    for epoch, choice in ((1, "k3e3"), (2, "k5e6")):
        layers = [{"choice": choice, "t_k5": 0.1, "norm_k5": 0.2} for _ in range(3)]
        rows.append(
            {"epoch": epoch, "train_loss": 2.3 / epoch, "blended_ms": 3.0, "images": 64,
             "val_accuracy": 0.1 * epoch, "predicted_ms": 3.4, "seconds": 0.2,
             "eval_seconds": 0.1, "layers": layers}
        )  # fmt: skip
    (folder / "decisions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if finished:
        result = {"architecture": "architecture.json", "layers": ["k5e6"] * 3}
        result |= {"predicted_ms": 3.4, "measured_ms": 3.3, "val_accuracy": 0.2, "macs": 5e6}
        result |= {"search_seconds": 12.3456}
        (folder / "result.json").write_text(json.dumps(result, indent=1) + "\n")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def fails_in_one_line(cli, folder: Path, file: str, says: str) -> None:
    """``autoshrink report FOLDER`` exits with status 2 and one line that names
    ``FOLDER/file`` and says ``says``, and writes nothing."""
    before = snapshot(folder)
    code, _, err = cli("report", folder)  # in-process: a traceback would fail the test
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"autoshrink: error: {folder / file}: "), lines[0]
    assert says in lines[0], lines[0]
    assert "Traceback" not in err
    assert snapshot(folder) == before
    assert not (folder / "report").exists()


def test_the_undamaged_folders_report(cli, tmp_path):
    _write_bench(tmp_path / "bench")
    _write_singlepath(tmp_path / "sp")
    for folder in (tmp_path / "bench", tmp_path / "sp"):
        code, out, err = cli("report", folder)
        assert code == 0, err
        assert (folder / "report" / "index.html").is_file()
        assert not (folder / "report" / "cells").exists()  # no cell picture, no empty folder
    page = (tmp_path / "sp" / "report" / "index.html").read_text()
    assert "epoch 2" in page and "k5e6, k5e6, k5e6" in page
    # display labels, not field names; seconds to one decimal
    assert "<dt>predicted latency (ms)</dt><dd>3.4000</dd>" in page
    assert "<dt>search time (s)</dt><dd>12.3</dd>" in page
    assert "<th>validation accuracy</th>" in page and "<td>0.2</td>" in page
    assert not any(f in page for f in ("predicted_ms", "search_seconds", "val_accuracy"))


@pytest.mark.parametrize("case", BENCH_CASES)
def test_a_report_of_a_damaged_bench_folder_fails_in_one_line(cli, tmp_path, case):
    damage, file, says = BENCH_CASES[case]
    folder = tmp_path / "bench"
    _write_bench(folder)
    damage(folder)
    fails_in_one_line(cli, folder, file, says)


@pytest.mark.parametrize("case", SINGLEPATH_CASES)
def test_a_report_of_a_damaged_singlepath_folder_fails_in_one_line(cli, tmp_path, case):
    damage, file, says = SINGLEPATH_CASES[case]
    folder = tmp_path / "sp"
    _write_singlepath(folder)
    damage(folder)
    fails_in_one_line(cli, folder, file, says)


def test_a_torn_last_decisions_line_is_skipped(cli, tmp_path):
    folder = tmp_path / "sp"
    _write_singlepath(folder, finished=False)
    (folder / "run.lock").write_text(f"{os.getpid()}\n")  # a live process holds the folder
    append("decisions.jsonl", b'{"epoch": 3, "la')(folder)  # the search is writing epoch 3
    before = (folder / "decisions.jsonl").read_bytes()
    code, _, err = cli("report", folder)
    assert code == 0, err
    assert (folder / "decisions.jsonl").read_bytes() == before  # read-only: nothing was cut
    page = (folder / "report" / "index.html").read_text()
    assert "epoch 2" in page and "epoch 3" not in page
    assert "the search is still running" in page


@pytest.mark.parametrize("lock", [None, "999999999\n"])  # none left, or a dead process's
def test_a_singlepath_search_stopped_before_its_end_is_not_called_running(cli, tmp_path, lock):
    """A killed Single-Path search (no result.json, no live process holding run.lock) was
    reported as "the search has not ended yet", as if it would: it ends only when resumed."""
    folder = tmp_path / "sp"
    _write_singlepath(folder, finished=False)
    if lock is not None:
        (folder / "run.lock").write_text(lock)
    code, _, err = cli("report", folder)
    assert code == 0, err
    page = (folder / "report" / "index.html").read_text()
    assert "still running" not in page and "not ended yet" not in page
    assert "stopped before its end" in page and f"--out {folder} --resume" in page


@pytest.mark.parametrize("file", ["curves.csv", "results.csv", "pareto.csv"])
def test_a_torn_last_csv_line_is_skipped(cli, tmp_path, file):
    folder = tmp_path / "bench"
    _write_bench(folder)
    text = (folder / file).read_text()
    cut = text[: text.rstrip("\n").rindex(",")]  # the last row, without its last value
    (folder / file).write_text(cut)
    code, _, err = cli("report", folder)
    assert code == 0, err
    assert (folder / file).read_text() == cut  # read-only: nothing was cut
    page = (folder / "report" / "index.html").read_text()
    if file == "results.csv":  # the table lacks the torn row
        table = page.split("Checkpoints (results.csv)")[1].split("</table>")[0]
        assert table.count("<tr>") == 2 and "random" in table and "rea" not in table
