"""A journal that went through ``--retry-failed`` resumes again, killed or finished, with or
without ``--retry-failed``: the records of the path a retrained candidate left are tolerated
(and only those), so a foreign record is still refused."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from autoshrink.errors import JournalError
from autoshrink.evaluators.base import Evaluation
from autoshrink.graph import Cell
from autoshrink.journal import Journal
from autoshrink.replay import Replay
from autoshrink.strategies.base import Proposal
from test_reliability import lines, search
from test_search import GOOD, ToyEvaluator, toy_config

# -- Replay, on hand-made journals ----------------------------------------------------------


def rec(key: str, step: int, status: str = "ok") -> dict:
    failed = status == "failed"
    return {
        "type": "candidate",
        "key": key,
        "step": step,
        "index": 0,
        "edges": 9 - step,
        "status": status,
        "score": None if failed else 1.0 + step,
        "metrics": {} if failed else {"accuracy": 0.5},
        "detail": {"error": "boom"} if failed else {},
        "cell": {},
    }


def journal(tmp_path: Path, *records: dict) -> Journal:
    path = tmp_path / "journal.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return Journal(path)


def hand_made(tmp_path: Path, records: list[dict], retry_failed: bool) -> Replay:
    """The replay of hand-made records (their cells are none: not read back through the
    journal's check, which :func:`test_a_resume_checks_each_record_it_reads_back` tests)."""
    return Replay(tmp_path / "journal.jsonl", enumerate(records, start=1), retry_failed, "0" * 64)


def ask(replay: Replay, step: int, *keys: str) -> None:
    replay.asked([Proposal(SimpleNamespace(key=k), step) for k in keys])


def test_a_resume_checks_each_record_it_reads_back(tmp_path):
    cell = Cell("cnn", ("input", "conv1x1", "sep3x3"), ((0, 1), (1, 2)))
    good = {**rec(cell.key, 0), "edges": 2, "cell": cell.to_dict()}
    # a step that is text would sort the path wrongly, far from the line that holds it
    cases = [
        ({"step": "1"}, '"step" must be an integer'),
        ({"cell": {**cell.to_dict(), "ops": ["input", "warp9x9", "sep3x3"]}}, "its cell: unknown"),
        ({"key": "a"}, f'its cell is not the cell of its "key" a (that cell\'s key is {cell.key})'),
        ({"edges": 3}, '"edges" is 3, its cell has 2'),
    ]
    for change, says in cases:
        records = journal(tmp_path, good, {**good, "step": 1, **change})
        with pytest.raises(JournalError, match=re.escape(f"journal.jsonl: line 2: {says}")):
            Replay.read(records, repair=False, retry_failed=False, config_hash="0" * 64)
    assert Replay.read(
        journal(tmp_path, good), repair=False, retry_failed=False, config_hash="0" * 64
    ).done


# Step 0: s; step 1: a and w -- w (line 3) wins but failed, so the search went on from a
# (lines 4-5: the old path); a --retry-failed session retrained w (line 6), which now wins:
# the search's path goes on from w (line 7 on, when that session got that far).
OLD_PATH = [rec("s", 0), rec("a", 1), rec("w", 1, "failed"), rec("p", 2), rec("q", 3)]
RETRIED = [*OLD_PATH, rec("w", 1)]


@pytest.mark.parametrize("retry_failed", [False, True])
@pytest.mark.parametrize("new_path", [0, 1, 2], ids=["killed-at-once", "killed", "finished"])
def test_the_old_path_of_a_retrained_candidate_is_tolerated_on_every_later_resume(
    tmp_path, caplog, retry_failed, new_path
):
    records = [*RETRIED, rec("r", 2), rec("t", 3)][: len(RETRIED) + new_path]
    replay = hand_made(tmp_path, records, retry_failed)
    assert replay.done["w"]["status"] == "ok"  # its last record counts: nothing to retrain
    ask(replay, 0, "s")
    ask(replay, 1, "a", "w")
    ask(replay, 2, "r")  # trains when the session was killed before it: the check runs
    ask(replay, 3, "t")
    ask(replay, 4, "u")  # trains: every record but those of the old path was asked for
    replay.finish()
    assert "2 records after the retrained candidates were not asked for" in caplog.text


@pytest.mark.parametrize("retry_failed", [False, True])
def test_a_foreign_record_is_refused_whatever_retries_the_journal_went_through(
    tmp_path, retry_failed
):
    foreign = rec("z", 3)
    after = [*RETRIED, rec("r", 2), foreign]  # appended to a retried run
    replay = hand_made(tmp_path, after, retry_failed)
    ask(replay, 0, "s")
    ask(replay, 1, "a", "w")
    ask(replay, 2, "r")
    with pytest.raises(JournalError, match=r"line 8 holds candidate z \(step 3\).*\(1 such\)"):
        ask(replay, 3, "t")
    before = [rec("s", 0), foreign, *RETRIED[1:]]  # before the failed record
    replay = hand_made(tmp_path, before, retry_failed)
    ask(replay, 0, "s")
    with pytest.raises(JournalError, match="line 2 holds candidate z"):
        ask(replay, 1, "a", "w", "x")


def test_without_retry_failed_a_failed_candidate_excuses_nothing(tmp_path):
    failed_twice = [*OLD_PATH, rec("w", 1, "failed"), rec("r", 4)]  # retrained: failed again
    replay = hand_made(tmp_path, failed_twice, False)
    assert replay.done["w"]["status"] == "failed"
    ask(replay, 0, "s")
    ask(replay, 1, "a", "w")
    ask(replay, 2, "p")
    ask(replay, 3, "q")
    with pytest.raises(JournalError, match="line 7 holds candidate r"):
        ask(replay, 4, "t")


def test_with_retry_failed_the_path_may_change_once_a_failed_candidate_is_asked_for(tmp_path):
    replay = hand_made(tmp_path, OLD_PATH, True)
    assert "w" not in replay.done  # it trains again
    ask(replay, 0, "s")
    ask(replay, 1, "a", "w")  # w wins now: p and q are not asked for again
    ask(replay, 2, "r")
    replay.finish()


def test_a_failed_candidate_off_the_path_does_not_excuse_a_foreign_record(tmp_path):
    # x failed on the old path (line 4); w was retrained since (line 6): the path leaves x;
    # a --retry-failed resume never asks for x, so the foreign z (line 8) is refused
    records = [rec("s", 0), rec("a", 1), rec("w", 1, "failed"), rec("x", 2, "failed")]
    records += [rec("p", 2), rec("w", 1), rec("r", 2), rec("z", 3)]
    replay = hand_made(tmp_path, records, True)
    assert "x" not in replay.done and replay.done["w"]["status"] == "ok"
    ask(replay, 0, "s")
    ask(replay, 1, "a", "w")
    ask(replay, 2, "r")
    with pytest.raises(JournalError, match="line 8 holds candidate z"):
        ask(replay, 3, "t")


# -- run_search with the toy evaluator: the auditor's sequence --------------------------------


class FailKey(ToyEvaluator):
    """The toy evaluator, but candidate ``key`` fails."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def evaluate(self, cell: Cell, seed: int) -> Evaluation:
        if cell.key == self.key:
            return Evaluation(self.profile(cell), "failed", 0.0, {"error": "boom"})
        return super().evaluate(cell, seed)


def detoured_run(tmp_path: Path):
    """The uninterrupted search (in ``full``) and, in ``run``, the same search whose step-1
    winner failed, so that it took another path; (full's result, run)."""
    full = search(tmp_path / "full", toy_config(k=3))
    rows = [json.loads(x) for x in lines(tmp_path / "full" / "journal.jsonl")]
    second = {tuple(e) for e in next(r for r in rows if r["step"] == 2)["cell"]["edges"]}
    winner = next(  # the step-1 candidate the search shrinks from
        r["key"] for r in rows if r["step"] == 1 and second < {tuple(e) for e in r["cell"]["edges"]}
    )
    run = tmp_path / "run"
    detour = search(run, toy_config(k=3), FailKey(winner))
    assert detour.stopped is None  # another candidate of step 1 won: the old path
    assert {json.loads(x)["key"] for x in lines(run / "journal.jsonl")} - {r["key"] for r in rows}
    return full, run


def test_the_report_of_a_retried_run_leaves_out_the_path_it_left(tmp_path):
    """The report kept the old path's records: more than K candidates a step, other winners,
    more candidates than result.json's evaluations."""
    from autoshrink.report.reading import read_run

    _, run = detoured_run(tmp_path)
    resumed = search(run, retry_failed=True)  # the winner trains now: the search takes its path
    events = [json.loads(x) for x in lines(run / "journal.jsonl") if '"off_path"' in x]
    assert len(events) == 1 and events[0]["keys"]
    want = read_run(tmp_path / "full")
    got = read_run(run)
    assert len(got.candidates) == resumed.evaluations - len(got.reused) == len(want.candidates)
    assert [(c.step, c.key, c.score) for c in got.ordered] == [
        (c.step, c.key, c.score) for c in want.ordered
    ]
    search(run)  # a resume of the ended search says it no more
    assert sum('"off_path"' in x for x in lines(run / "journal.jsonl")) == 1


def test_a_retried_run_resumes_again_killed_or_finished(tmp_path, caplog):
    full, run = detoured_run(tmp_path)
    detoured = len(lines(run / "journal.jsonl"))
    resumed = search(run, retry_failed=True)  # the winner trains now: the search takes its path
    assert resumed.cell == full.cell and resumed.best.score == full.best.score
    assert "were not asked for again (the search took another path)" in caplog.text
    retried = lines(run / "journal.jsonl")
    for retry_failed in (False, True):  # the finished run replays: nothing trains
        again = search(run, retry_failed=retry_failed)
        assert again.trained == 0 and again.cell == full.cell
        assert again.best.score == full.best.score
    for cut in (detoured + 1, detoured + 3):  # the retry session killed after the winner
        for retry_failed in (False, True):
            killed = tmp_path / f"killed-{cut}-{retry_failed}"
            shutil.copytree(run, killed)
            (killed / "journal.jsonl").write_text("".join(x + "\n" for x in retried[:cut]))
            resumed = search(killed, retry_failed=retry_failed)
            assert resumed.cell == full.cell and resumed.best.score == full.best.score
            assert search(killed, retry_failed=not retry_failed).trained == 0


def test_a_resume_after_a_diverged_candidate_does_not_train_it_again(tmp_path):
    """Pins that a diverged candidate of the journal is done, like a scored one: a run killed
    just after one resumes by training only the candidates its journal lacks."""
    run = tmp_path / "run"
    full = search(run, toy_config(), ToyEvaluator(diverge=frozenset(GOOD)))
    rows = lines(run / "journal.jsonl")
    cut = 1 + next(n for n, x in enumerate(rows) if json.loads(x).get("status") == "diverged")
    killed = tmp_path / "killed"
    shutil.copytree(run, killed)
    (killed / "journal.jsonl").write_text("".join(x + "\n" for x in rows[:cut]))
    lacking = sum(json.loads(x).get("type", "candidate") == "candidate" for x in rows[cut:])
    ev = ToyEvaluator(diverge=frozenset(GOOD))
    resumed = search(killed, ev=ev)
    assert lacking > 0 and ev.calls == lacking
    assert resumed.cell == full.cell and resumed.best.score == full.best.score


# -- the command line, on digits: the auditor's reproduction with tiny settings ---------------

TINY = [
    "--preset", "demo", "--nodes", "4", "--k", "2", "--keep-fraction", "0.5",
    "--per-class", "20", "--val-size", "60", "--epochs", "1", "--width", "0.25",
    "--executor", "inprocess",
]  # fmt: skip


def test_the_command_line_resumes_a_retried_run_again(cli, tmp_path, one_thread):
    ref, run = tmp_path / "ref", tmp_path / "run"
    code, _, err = cli("search", *TINY, "--out", ref, "--no-progress")
    assert code == 0, err
    rows = [json.loads(x) for x in lines(ref / "journal.jsonl")]
    last = max(r["step"] for r in rows)
    children = [edge_set(r) for r in rows if r["step"] == last]
    line = next(  # the winner of the step before the last, recorded as failed
        n
        for n, r in enumerate(rows)
        if r["step"] == last - 1 and all(c < edge_set(r) for c in children)
    )
    run.mkdir()
    for name in ("config.json", "fingerprint.json"):
        shutil.copy(ref / name, run / name)
    failed = rows[line] | {"status": "failed", "score": None, "detail": {"error": "x"}}
    failed["metrics"] = {k: v for k, v in failed["metrics"].items() if k != "accuracy"}
    kept = [*rows[:line], failed]
    (run / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    resume = ["search", "--resume", run, "--no-progress"]
    assert cli(*resume)[0] == 0  # finishes on the path without that cell
    old = [json.loads(x)["key"] for x in lines(run / "journal.jsonl")]
    assert set(old) - {r["key"] for r in rows}, "no old path: the test shows nothing"
    code, _, err = cli(*resume, "--retry-failed")
    assert code == 0, err
    retried = lines(run / "journal.jsonl")
    killed = tmp_path / "killed"  # the retry session killed right after the retrained cell
    shutil.copytree(run, killed)
    (killed / "journal.jsonl").write_text("".join(x + "\n" for x in retried[: len(old) + 1]))
    best = json.loads((ref / "result.json").read_text())["best"]
    for folder, extra in [(run, []), (run, ["--retry-failed"]), (killed, []), (killed, [])]:
        code, _, err = cli("search", "--resume", folder, "--no-progress", *extra)
        assert code == 0, err
        result = json.loads((folder / "result.json").read_text())["best"]
        assert (result["key"], result["score"]) == (best["key"], best["score"])


def edge_set(row: dict) -> set[tuple[int, int]]:
    return {tuple(e) for e in row["cell"]["edges"]}
