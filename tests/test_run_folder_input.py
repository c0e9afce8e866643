"""Bad run-folder input: ``autoshrink search --resume`` and ``autoshrink report`` of a run folder
whose ``config.json``, ``journal.jsonl`` or ``result.json`` is damaged say what is wrong in one
line that names the file (and the key, or the line), exit with status 2, and leave the folder's
files as they were.

The run folder is a tiny search scored by the toy evaluator of tests/test_search.py, made once
per module; each test damages a private copy.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from autoshrink.config import SearchConfig
from autoshrink.errors import ConfigError
from autoshrink.graph import Cell
from autoshrink.presets import preset
from autoshrink.search import run_search
from test_search import ToyEvaluator

Damage = Callable[[Path], None]


@pytest.fixture(scope="module")
def made_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny search (4 nodes, K = 2) on the digits preset, scored by the toy."""
    run = tmp_path_factory.mktemp("made") / "run"
    config = preset("demo", nodes=4, k=2, training_epochs=1)
    run_search(run, config, evaluator_factory=lambda c: ToyEvaluator(), progress=False)
    fingerprint = json.loads((run / "fingerprint.json").read_text())  # the toy stands in for
    fingerprint["evaluator"] = None  # the built-in evaluator, which the CLI resumes with
    (run / "fingerprint.json").write_text(json.dumps(fingerprint))
    return run


@pytest.fixture
def run(made_run: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny run."""
    return Path(shutil.copytree(made_run, tmp_path / "run"))


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder``: a file's bytes, ``None`` for a folder."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


def edit_config(**settings: object) -> Damage:
    def damage(run: Path) -> None:
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps(config | settings))

    return damage


def edit_record(line: int, **fields: object) -> Damage:
    def damage(run: Path) -> None:
        lines = (run / "journal.jsonl").read_text().splitlines()
        record = json.loads(lines[line - 1])
        assert record["type"] == "candidate"
        lines[line - 1] = json.dumps(record | fields)
        (run / "journal.jsonl").write_text("\n".join(lines) + "\n")

    return damage


def append_line(text: str) -> Damage:
    def damage(run: Path) -> None:
        with (run / "journal.jsonl").open("a") as f:
            f.write(text + "\n")

    return damage


def write_line(line: int, change: Callable[[str], str]) -> Damage:
    def damage(run: Path) -> None:
        lines = (run / "journal.jsonl").read_text().splitlines()
        lines[line - 1] = change(lines[line - 1])
        (run / "journal.jsonl").write_text("\n".join(lines) + "\n")

    return damage


def write(name: str, data: bytes) -> Damage:
    def damage(run: Path) -> None:
        (run / name).write_bytes(data)

    return damage


def folder_for(name: str) -> Damage:
    def damage(run: Path) -> None:
        (run / name).unlink()
        (run / name).mkdir()

    return damage


# (damage, the file the message names, what it says about it)
CONFIG_CASES = {
    "not-utf8": (write("config.json", b"\xff\xfe\x00\x01"), "config.json", "not UTF-8 text"),
    "truncated": (write("config.json", b"{"), "config.json", "not valid JSON"),
    "constraints-list": (
        edit_config(constraints=[1, 2]),
        "config.json",
        '"constraints" must be an object, got [1, 2]',
    ),
    "device-int": (edit_config(device=5), "config.json", '"device" must be a string, got 5'),
    "k-string": (edit_config(k="four"), "config.json", '"k" must be an integer, got "four"'),
    "nodes-null": (edit_config(nodes=None), "config.json", '"nodes" must be an integer, got null'),
    "score-weight": (
        edit_config(score={"weight": "x"}),
        "config.json",
        '"score.weight" must be a number, got "x"',
    ),
}
JOURNAL_CASES = {
    "score-string": (
        edit_record(3, score="abc"),
        "journal.jsonl",
        'line 3: "score" must be a number or null, got "abc"',
    ),
    "metrics-list": (
        edit_record(3, metrics=[1]),
        "journal.jsonl",
        'line 3: "metrics" must be an object, got [1]',
    ),
    "journal-folder": (folder_for("journal.jsonl"), "journal.jsonl", "not a file"),
    # values of the right JSON type that no search writes (once silently taken, or blamed on
    # the config at a later line)
    "type-unknown": (
        edit_record(3, type="zzz"),
        "journal.jsonl",
        "line 3: unknown record type 'zzz'; expected one of candidate, stage, reuse, event",
    ),
    "step-negative": (edit_record(3, step=-1), "journal.jsonl", 'line 3: "step" must be >= 0'),
    "seconds-negative": (
        edit_record(3, seconds=-5),
        "journal.jsonl",
        'line 3: "seconds" must be >= 0, got -5',
    ),
    "status-unknown": (
        edit_record(3, status="weird"),
        "journal.jsonl",
        "line 3: \"status\" must be one of ok, diverged, failed, rejected, screened, got 'weird'",
    ),
    "score-overflow": (
        write_line(3, lambda text: text.replace('"score": ', '"score": -1e400, "was": ')),
        "journal.jsonl",
        "line 3 is not a JSON record (-1e400 is beyond a float's range)",
    ),
    # a resume replays by key and the report draws the cell: both read the cell first (a
    # resume took any cell, and the report drew another cell than the key's)
    "cell-backward-edge": (
        edit_record(
            3, cell=Cell("cnn", ("input", "conv1x1"), ((0, 1),)).to_dict() | {"edges": [[1, 0]]}
        ),
        "journal.jsonl",
        "line 3: its cell: edge 1->0 does not go forward",
    ),
    # an off-path event (the records a retrained winner's path left) that names no records
    "off-path-keys": (
        append_line('{"type": "event", "event": "off_path", "keys": "x", "reuses": []}'),
        "journal.jsonl",
        '"keys" must be a list, got "x"',
    ),
    "off-path-reuses": (
        append_line('{"type": "event", "event": "off_path", "keys": [], "reuses": [[1]]}'),
        "journal.jsonl",
        '"reuses" must be a list of [step, key] pairs',
    ),
    "cell-of-another-key": (
        edit_record(3, cell=Cell("cnn", ("input", "conv1x1"), ((0, 1),)).to_dict()),
        "journal.jsonl",
        'line 3: its cell is not the cell of its "key" ',
    ),
    "edges-not-its-cells": (
        edit_record(3, edges=99),
        "journal.jsonl",
        'line 3: "edges" is 99, its cell has ',
    ),
}
REPORT_CASES = {
    "result-list": (write("result.json", b"[1]"), "result.json", "expected a JSON object"),
    "result-truncated": (write("result.json", b"{"), "result.json", "not valid JSON"),
    "config-folder": (folder_for("config.json"), "config.json", "not a file"),
}


def fails_in_one_line(cli, run: Path, args: list[object], file: str, says: str) -> None:
    """``autoshrink ARGS`` exits with status 2 and one line that names ``run/file`` and says
    ``says``, and leaves every file of ``run`` as it was."""
    before = snapshot(run)
    code, _, err = cli(*args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"autoshrink: error: {run / file}: "), lines[0]
    assert says in lines[0], lines[0]
    assert snapshot(run) == before


@pytest.mark.parametrize("case", [*CONFIG_CASES, *JOURNAL_CASES])
def test_a_resume_of_a_damaged_run_folder_fails_in_one_line(cli, run, case):
    damage, file, says = {**CONFIG_CASES, **JOURNAL_CASES}[case]
    damage(run)
    args = ["search", "--resume", run, "--executor", "inprocess", "--no-progress"]
    fails_in_one_line(cli, run, args, file, says)


@pytest.mark.parametrize("case", [*CONFIG_CASES, *JOURNAL_CASES, *REPORT_CASES])
def test_a_report_of_a_damaged_run_folder_fails_in_one_line(cli, run, case):
    damage, file, says = {**CONFIG_CASES, **JOURNAL_CASES, **REPORT_CASES}[case]
    damage(run)
    fails_in_one_line(cli, run, ["report", run], file, says)
    assert not (run / "report").exists()


def test_the_undamaged_run_folder_resumes_and_reports(cli, run):
    again = run_search(run, resume=True, evaluator_factory=lambda c: ToyEvaluator(), progress=False)
    assert again.trained == 0 and again.evaluations > 0
    code, out, err = cli("report", run)
    assert code == 0, err
    assert (run / "report" / "index.html").is_file()


def test_a_config_file_that_is_a_folder_is_named_as_not_a_file(tmp_path):
    (tmp_path / "config.json").mkdir()
    with pytest.raises(ConfigError, match=r"config\.json: a folder, not a file"):
        SearchConfig.load(tmp_path / "config.json")


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"training": {"epochs": "2"}}, '"training.epochs" must be an integer, got "2"'),
        ({"ood": {"lr": [1]}}, '"ood.lr" must be a number, got [1]'),
        ({"constraints": {"macs": "big"}}, '"constraints.macs" must be a number, got "big"'),
        ({"score_start": 1}, '"score_start" must be true or false, got 1'),
        ({"screening_stages": [{"classes": 2}]}, '"screening_stages[0].epochs" is missing'),
        ({"task": "rnn", "training": {"nhid": None}}, '"training.nhid" must be an integer'),
        ({"k": 0}, "c.json: k must be >= 1, got 0"),  # a range error names the file too
        # named in Python's words: "OodSettings.__init__() got an unexpected keyword argument"
        ({"ood": {"bogus": 1}}, "unknown setting(s) ['ood.bogus']"),
        ({"training": {"epoch": 2}}, "unknown setting(s) ['training.epoch']"),
    ],
)
def test_config_values_are_checked_against_their_fields_types(tmp_path, settings, says):
    (tmp_path / "c.json").write_text(json.dumps(settings))
    with pytest.raises(ConfigError) as err:
        SearchConfig.load(tmp_path / "c.json")
    assert str(err.value).startswith(f"{tmp_path / 'c.json'}: ") and says in str(err.value)


def test_a_bad_executor_saved_in_the_config_is_named_with_it(cli, run):
    edit_config(execution={"executor": "nope"})(run)
    args = ["search", "--resume", run, "--no-progress"]
    fails_in_one_line(cli, run, args, "config.json", "unknown executor 'nope'")


def test_a_resume_says_which_evaluator_scores_the_rest(tmp_path, caplog) -> None:
    import logging

    from autoshrink.run_folder import BUILT_IN_FACTORY, check_evaluator

    with caplog.at_level(logging.WARNING, logger="autoshrink.run_folder"):
        check_evaluator(tmp_path, None, BUILT_IN_FACTORY)  # the built-in, named: the same
        check_evaluator(tmp_path, "my.f", "my.f")
        assert caplog.text == ""
        check_evaluator(tmp_path, "my.f", "other.f")
        check_evaluator(tmp_path, None, "other.f")
    assert "scored by my.f; other.f scores the rest" in caplog.text
    assert "scored by the built-in evaluator; other.f scores the rest" in caplog.text
    with pytest.raises(ConfigError, match="scored by the custom evaluator my.f"):
        check_evaluator(tmp_path, "my.f", None)


def test_a_start_keeps_its_files_once_its_journal_holds_anything(tmp_path) -> None:
    from autoshrink.run_folder import CONFIG, JOURNAL, unstarted

    for content, kept in ((b"", False), (b"x", True)):
        run = tmp_path / f"r{len(content)}"
        run.mkdir()
        (run / CONFIG).write_text("{}")
        (run / JOURNAL).write_bytes(content)
        unstarted(run)
        assert (run / CONFIG).exists() is kept and (run / JOURNAL).exists() is kept
