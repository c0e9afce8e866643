"""Runs that survive: resume rebuilds the run's executor, the run-folder lock, the config
fingerprint and foreign journals, a step where every candidate failed, signals, a full disk,
a torn journal tail, and retraining failed candidates."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoshrink.config import ExecutionSettings, SearchConfig
from autoshrink.errors import ConfigError, JournalError
from autoshrink.evaluators.base import Evaluation
from autoshrink.executors.base import InProcessExecutor
from autoshrink.graph import Cell
from autoshrink.journal import LOCK, Journal, RunLock
from autoshrink.outputs import held_folder
from autoshrink.search import run_search
from autoshrink.stop_signals import SearchInterrupted
from test_search import ToyEvaluator, candidates, strip_seconds, toy_config

REPO = Path(__file__).resolve().parents[1]


def search(run: Path, cfg: SearchConfig | None = None, ev: ToyEvaluator | None = None, **kw):
    ev = ev or ToyEvaluator()
    return run_search(
        run, cfg, evaluator_factory=lambda c: ev, progress=False, resume=cfg is None, **kw
    )


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


# -- item 2: --resume rebuilds the run's executor and device -------------------------------


class Stop(Exception):
    pass


@pytest.fixture
def captured(monkeypatch):
    """Capture what the CLI builds its executor from and the config it searches; no search."""
    import autoshrink.cli.search as cli_search
    import autoshrink.executors.factory as factory

    seen: dict = {}

    def build(name, workers=None, **kw):
        seen.update(kw, name=name, workers=workers)
        return object()

    def run(run_dir, config, **kw):
        seen["config"] = config
        raise Stop

    monkeypatch.setattr(factory, "build_executor", build)  # what executor_for calls
    monkeypatch.setattr(cli_search, "run_search", run)
    return seen


def test_resume_rebuilds_the_executor_and_device_of_the_run(captured, tmp_path):
    from autoshrink.cli import main

    run = tmp_path / "gpu"
    run.mkdir()
    cuda = ExecutionSettings(executor="batched", precision="bf16", cuda_graph=True)
    SearchConfig(device="cuda", execution=cuda).save(run / "config.json")
    with pytest.raises(Stop):
        main(["search", "--resume", str(run)])
    assert captured["device"] == "cuda" and captured["name"] == "batched"
    assert captured["precision"] == "bf16" and captured["cuda_graph"] is True
    with pytest.raises(Stop):  # another executor given again: its own options, same device
        main(["search", "--resume", str(run), "--executor", "inprocess"])
    assert captured["device"] == "cuda" and captured["name"] == "inprocess"
    assert captured["precision"] is None and captured["cuda_graph"] is None
    # the run's own executor named again keeps the run's options (bf16 went to float32)
    with pytest.raises(Stop):
        main(["search", "--resume", str(run), "--executor", "batched"])
    assert captured["precision"] == "bf16" and captured["cuda_graph"] is True
    run_default = tmp_path / "gpu-default"  # batched as the GPU's default, not named
    run_default.mkdir()
    on_default = ExecutionSettings(precision="bf16")
    SearchConfig(device="cuda", execution=on_default).save(run_default / "config.json")
    with pytest.raises(Stop):
        main(["search", "--resume", str(run_default), "--executor", "batched"])
    assert captured["name"] == "batched" and captured["precision"] == "bf16"


def test_a_new_search_saves_its_executor_in_the_config(captured, tmp_path):
    from autoshrink.cli import main

    with pytest.raises(Stop):
        main(["search", "--preset", "demo", "--executor", "pool", "--workers", "3"])
    cfg = captured["config"]
    assert cfg.execution == ExecutionSettings(executor="pool", workers=3)
    cfg.save(tmp_path / "c.json")
    assert SearchConfig.load(tmp_path / "c.json").execution.workers == 3
    assert (captured["name"], captured["workers"], captured["device"]) == ("pool", 3, "cpu")
    with pytest.raises(Stop):  # an explicit --no-cuda-graph is saved, not the default (None)
        main(["search", "--preset", "demo", "--executor", "batched", "--no-cuda-graph"])
    assert captured["config"].execution.cuda_graph is False


def test_no_cuda_graph_on_another_executor_is_refused(cli, tmp_path):
    """It was saved in config.json and read by nothing (--cuda-graph was refused)."""
    for executor in ([], ["--executor", "inprocess"]):
        code, _, err = cli("search", "--preset", "demo", *executor, "--no-cuda-graph",
                           "--out", tmp_path / "run")  # fmt: skip
        assert code == 2 and "--no-cuda-graph sets the batched engine; the executor is" in err
        assert not (tmp_path / "run").exists()


# -- item 3: the run-folder lock ------------------------------------------------------------


def test_a_second_holder_of_a_run_folder_gets_the_pid_of_the_first(tmp_path, cli):
    run = tmp_path / "run"
    search(run, toy_config(k=2))
    assert not (run / LOCK).exists()  # released when the search ended
    with RunLock(run):
        assert (run / LOCK).read_text().strip() == str(os.getpid())
        with pytest.raises(JournalError, match=f"in use by process {os.getpid()}"):
            search(run)
        for resume in (["--resume", run], ["--out", run, "--resume"]):  # two spellings
            code, _, err = cli("search", *resume, "--executor", "inprocess")
            assert code == 2
            assert err.strip().splitlines() == [
                f"autoshrink: error: {run} is in use by process {os.getpid()} ({run / LOCK}); "
                "wait for it to end or stop it"
            ]
        with pytest.raises(JournalError, match="in use by process"):  # a new search too
            search(run, toy_config(k=2))
    assert not (run / LOCK).exists()


def test_the_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK).write_text(f"{dead.pid}\n")
    with RunLock(tmp_path):
        assert (tmp_path / LOCK).read_text().strip() == str(os.getpid())
    assert not (tmp_path / LOCK).exists()


def test_the_lock_is_held_by_another_process_until_it_dies(tmp_path):
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[2]);"
        "from autoshrink.journal import RunLock;"
        "lock = RunLock(sys.argv[1]); lock.acquire(); print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path), str(REPO / "src")], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(JournalError, match=f"in use by process {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()  # SIGKILL: no clean-up, run.lock stays with its pid
        holder.wait()
    assert (tmp_path / LOCK).read_text().strip() == str(holder.pid)
    with RunLock(tmp_path):
        pass


# -- item 4: the config fingerprint and foreign journals ------------------------------------


def test_resume_refuses_an_edited_config_naming_the_setting(tmp_path):
    run = tmp_path / "run"
    search(run, toy_config(k=3, seed=1))
    cfg = json.loads((run / "config.json").read_text())
    cfg["k"], cfg["device"] = 4, "cuda"  # the device is not part of the fingerprint
    (run / "config.json").write_text(json.dumps(cfg))
    ev = ToyEvaluator()
    with pytest.raises(
        JournalError, match=r"not the config the journal was made with \(changed: k: 3 -> 4;"
    ):
        search(run, ev=ev)
    assert ev.calls == 0
    cfg["k"] = 3  # only the device differs: resumes
    (run / "config.json").write_text(json.dumps(cfg))
    assert search(run, ev=ev).trained == 0
    # a fingerprint of early versions holds no settings: every one was named as changed
    saved = json.loads((run / "fingerprint.json").read_text())
    del saved["settings"]
    (run / "fingerprint.json").write_text(json.dumps(saved))
    cfg["k"] = 4
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(JournalError, match=r"made with \(changed: unknown; fingerprint.json"):
        search(run, ev=ev)


def test_a_fingerprint_file_of_the_wrong_shape_is_one_line(tmp_path):
    run = tmp_path / "run"
    search(run, toy_config(k=3, seed=1))
    saved = json.loads((run / "fingerprint.json").read_text())
    saved.update(config_hash="0" * 64, settings=[1])  # an AttributeError before
    (run / "fingerprint.json").write_text(json.dumps(saved))
    with pytest.raises(JournalError, match='fingerprint.json: not a fingerprint file ."settings" '
                       r"must be an object, got \[1\]"):  # fmt: skip
        search(run, ev=ToyEvaluator())
    for damaged, says in [
        ([1, 2], r"expected a JSON object, got list"),  # Python's list index error before
        ({"config_hash": 5}, '"config_hash" must be a string, got 5'),
        ({"settings": {}}, '"config_hash" is missing'),
        ({"config_hash": "0", "evaluator": 3}, '"evaluator" must be a string or null, got 3'),
    ]:
        (run / "fingerprint.json").write_text(json.dumps(damaged))
        with pytest.raises(JournalError, match=f"fingerprint.json: not a fingerprint file .{says}"):
            search(run, ev=ToyEvaluator())


def test_a_folder_for_a_fingerprint_or_a_bad_activation_is_named_before_anything_is_written(
    tmp_path,
):
    """A folder where fingerprint.json goes was taken for an older run without one, and writing
    it failed in two lines; a config.json with an unknown activation was first named by the
    network builder, without its file."""
    run = tmp_path / "run"
    search(run, toy_config(k=3, seed=1))
    (run / "fingerprint.json").unlink()
    (run / "fingerprint.json").mkdir()
    with pytest.raises(JournalError, match=r"fingerprint.json: a folder, not a file"):
        search(run, ev=ToyEvaluator())
    (run / "fingerprint.json").rmdir()
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "activation": "gelu"}))
    with pytest.raises(ConfigError, match=r"config.json: unknown activation 'gelu'; expected "):
        search(run, ev=ToyEvaluator())
    assert not (run / "fingerprint.json").exists()  # not written from the bad config


def test_a_refused_resume_of_a_folder_without_a_fingerprint_leaves_none(tmp_path):
    """An older folder (no fingerprint.json) whose config.json was edited got a fingerprint of
    the edited config before its journal was refused; with config.json restored, the resume
    was then refused for a change from that config ("changed: seed: 2 -> 1")."""
    run = tmp_path / "run"
    search(run, toy_config(k=3, seed=1))
    (run / "fingerprint.json").unlink()
    (run / "result.json").unlink()
    original = (run / "config.json").read_text()
    (run / "config.json").write_text(json.dumps({**json.loads(original), "seed": 2}))
    with pytest.raises(JournalError, match=r"line 1 holds a record of another config"):
        search(run, ev=ToyEvaluator())
    assert not (run / "fingerprint.json").exists()
    (run / "config.json").write_text(original)
    assert search(run, ev=ToyEvaluator()).trained == 0
    saved = json.loads((run / "fingerprint.json").read_text())["config_hash"]
    assert saved == SearchConfig.load(run / "config.json").fingerprint()


def test_resume_refuses_a_journal_made_by_another_config(tmp_path):
    mine, other = tmp_path / "mine", tmp_path / "other"
    search(mine, toy_config(k=3, seed=1))
    search(other, toy_config(k=3, seed=2))
    theirs = lines(other / "journal.jsonl")
    (mine / "journal.jsonl").write_text("\n".join(theirs) + "\n")
    ev = ToyEvaluator()
    their_hash = json.loads((other / "fingerprint.json").read_text())["config_hash"][:12]
    with pytest.raises(
        JournalError,
        match=rf"journal.jsonl: line 1 holds a record of another config .config hash {their_hash}",
    ):
        search(mine, ev=ev)
    # records without a config hash (journals of earlier versions): their cells tell
    unstamped = [{k: v for k, v in json.loads(x).items() if k != "config_hash"} for x in theirs]
    (mine / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in unstamped))
    with pytest.raises(JournalError, match=r"journal.jsonl: line \d+ holds candidate \w+ \(step"):
        search(mine, ev=ev)
    assert ev.calls == 0  # refused before training anything


def test_resume_refuses_the_journal_of_another_config_with_the_same_cells(tmp_path):
    """Same seed and cells, another proxy training: only the records' config hash tells."""
    mine, other = tmp_path / "mine", tmp_path / "other"
    search(mine, toy_config(k=3, seed=1))
    search(other, toy_config(k=3, seed=1, per_class=7))
    assert [json.loads(x)["key"] for x in lines(mine / "journal.jsonl")] == [
        json.loads(x)["key"] for x in lines(other / "journal.jsonl")
    ]
    (mine / "journal.jsonl").write_text((other / "journal.jsonl").read_text())
    ev = ToyEvaluator()
    with pytest.raises(JournalError, match="line 1 holds a record of another config"):
        search(mine, ev=ev)
    assert ev.calls == 0


def test_resume_refuses_a_journal_with_an_extra_record(tmp_path):
    run, other = tmp_path / "run", tmp_path / "other"
    search(run, toy_config(k=3, seed=1))
    search(other, toy_config(k=3, seed=2))
    mine = {json.loads(x)["key"] for x in lines(run / "journal.jsonl")}
    stray = next(x for x in lines(other / "journal.jsonl") if json.loads(x)["key"] not in mine)
    with (run / "journal.jsonl").open("a") as f:
        f.write(stray + "\n")
    n = len(lines(run / "journal.jsonl"))
    with pytest.raises(JournalError, match=f"line {n} holds a record of another config"):
        search(run)


@pytest.mark.parametrize("field", ["score", "metrics"])
def test_resume_names_a_record_whose_score_is_not_its_metrics_score(tmp_path, field):
    """A score edited by hand in the journal (or the metrics it was computed from) was said to
    be "a record of another config" or one the search "did not ask for": the record is this
    config's, and its score is not what the config's score gives its metrics."""
    run = tmp_path / "run"
    search(run, toy_config(k=3, seed=1))
    (run / "result.json").unlink()  # resumed as if killed
    rows = [json.loads(x) for x in lines(run / "journal.jsonl")]
    n, edited = next((i, r) for i, r in enumerate(rows, start=1) if r["step"] == 1)
    if field == "score":
        edited["score"] = 9.5
    else:
        edited["metrics"]["accuracy"] += 3.0
    (run / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # independently: Score.cnn() is accuracy - 0.1 * (log10(macs) - 6), the toy's macs 10^(6+e)
    right = edited["metrics"]["accuracy"] - 0.1 * edited["edges"]
    ev = ToyEvaluator()
    with pytest.raises(JournalError) as refused:
        search(run, ev=ev)
    assert str(refused.value).startswith(
        f"{run / 'journal.jsonl'}: line {n}: candidate {edited['key']}'s score {edited['score']} "
        f"is not what this config's score gives its metrics ({right:.6g}); "
    ), refused.value
    assert ev.calls == 0


def test_resume_refuses_a_second_record_of_a_candidate_that_did_not_fail(tmp_path):
    run = tmp_path / "run"
    search(run, toy_config(k=3, seed=1))
    first = lines(run / "journal.jsonl")[1]
    again = json.dumps(json.loads(first) | {"score": 9.0})  # the same run's stamp, a new result
    with (run / "journal.jsonl").open("a") as f:
        f.write(again + "\n")
    n = len(lines(run / "journal.jsonl"))
    key = json.loads(first)["key"]
    with pytest.raises(
        JournalError,
        match=f"line {n} holds a second record of candidate {key}, whose earlier one is 'ok'",
    ):
        search(run)


# -- item 6: a step where every candidate failed ends the search ----------------------------


class FailingStep(ToyEvaluator):
    """Every candidate with ``edges`` edges fails (as an out-of-memory error would)."""

    def __init__(self, edges: int, error: str = "RuntimeError: boom") -> None:
        super().__init__()
        self.edges, self.error = edges, error

    def evaluate(self, cell: Cell, seed: int) -> Evaluation:
        if cell.num_edges == self.edges:
            self.calls += 1
            return Evaluation(self.profile(cell), "failed", 0.0, {"error": self.error})
        return super().evaluate(cell, seed)


def test_autoshrink_stops_when_every_candidate_of_a_step_failed(tmp_path, caplog, capsys):
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        result = search(run, toy_config(k=3), FailingStep(edges=14))
    assert not [r for r in caplog.records if "stopped" in r.getMessage()]  # result.stopped has it
    rows = [json.loads(x) for x in lines(run / "journal.jsonl")]
    assert [r["step"] for r in rows] == [0, 1, 1, 1]
    assert [r["status"] for r in rows[1:]] == ["failed"] * 3
    assert result.stopped == (
        "every candidate of step 1 failed (3 failed); the search cannot shrink from a failed cell"
    )
    assert result.best.proposal.step == 0 and result.cell.num_edges == 15
    assert json.loads((run / "result.json").read_text())["stopped"] == result.stopped
    from autoshrink.cli.search_summary import print_summary, stopped_early

    capsys.readouterr()
    assert stopped_early(result) == 1  # the command line says it once (a warning said it too)
    assert capsys.readouterr().err.count("stopped early") == 1
    assert print_summary(result) == 1  # the exit status of `autoshrink search`
    out, err = capsys.readouterr()
    assert "complete cell score" in out and err.count("stopped early") == 1
    assert "ended:" not in out  # the early stop has its own message
    assert print_summary(result, as_json=True) == 1  # --json prints result.json
    assert json.loads(capsys.readouterr().out)["stopped"] == result.stopped
    whole = search(tmp_path / "whole", toy_config(k=3), ToyEvaluator())
    capsys.readouterr()
    assert print_summary(whole) == 0 and whole.stopped is None
    out, err = capsys.readouterr()
    assert f"ended: {whole.ended}\n" in out and err == ""


def test_the_summary_names_each_cost_in_its_unit() -> None:
    from autoshrink.cli.search_summary import cost_phrase
    from autoshrink.nouns import count

    metrics = {"macs": 114560.0, "params": 806.0, "latency_ms": 1.4734, "table_latency_ms": 2.5}
    assert cost_phrase(metrics, "macs") == "114,560 MACs"
    assert cost_phrase(metrics, "params") == "806 params"
    assert cost_phrase(metrics, "latency_ms") == "1.473 ms latency"
    assert cost_phrase(metrics, "table_latency_ms") == "2.500 ms table latency"
    assert cost_phrase({"edge_cost": 1024.0}, "edge_cost") == "1,024 edge_cost"  # an rnn's
    assert [count(n, "edge") for n in (1, 6)] == ["1 edge", "6 edges"]  # "1 edges" before


# -- item 10: signals, a full disk, a torn journal tail -------------------------------------

SLOW_SEARCH = """
import sys, time
sys.path[:0] = sys.argv[1:3]
import autoshrink.evaluators.factory as factory
from test_search import ToyEvaluator

class Slow(ToyEvaluator):
    def evaluate(self, cell, seed):
        time.sleep(0.05)
        return super().evaluate(cell, seed)

factory.build_evaluator = lambda config: Slow()
from autoshrink.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_search_cleanly_and_it_resumes(tmp_path, sig, status):
    run = tmp_path / "run"
    args = ["search", "--nodes", "6", "--k", "15", "--keep-fraction", "0", "--seed", "0"]
    args += ["--executor", "inprocess", "--no-progress", "--out", str(run)]
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_SEARCH, str(REPO / "src"), str(REPO / "tests"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    journal = run / "journal.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (journal.exists() and len(lines(journal)) >= 3):
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    kept = [json.loads(x) for x in lines(journal)]  # every line whole
    trained = sum(r["type"] == "candidate" for r in kept)
    assert journal.read_text().endswith("\n") and not (run / LOCK).exists()
    assert err.strip().splitlines()[-1] == (
        f"autoshrink: search stopped by {sig.name}; {trained} "
        f"{'candidate is' if trained == 1 else 'candidates are'} in {journal}; "
        f"continue with: autoshrink search --resume {run}"
    )
    assert not (run / "result.json").exists()
    cfg = SearchConfig.load(run / "config.json")
    full = search(tmp_path / "full", cfg)
    ev = ToyEvaluator()
    resumed = search(run, ev=ev)
    assert ev.calls == full.trained - trained and resumed.cell == full.cell
    assert strip_seconds(journal) == strip_seconds(tmp_path / "full" / "journal.jsonl")


def test_a_signal_while_the_results_are_written_comes_once_they_are_there(tmp_path, monkeypatch):
    """A SIGTERM while the results were written stopped the search half-way, saying "continue
    with --resume" (and once result.json was there, the resume only said the search had
    ended); the stop now waits for the results and says where they are."""
    import autoshrink.search as search_module

    write = search_module.write_result

    def sigterm_meanwhile(out, config, network):
        os.kill(os.getpid(), signal.SIGTERM)  # delivered here, in the main thread
        time.sleep(0.05)  # still writing when the handler runs
        write(out, config, network)

    monkeypatch.setattr(search_module, "write_result", sigterm_meanwhile)
    run = tmp_path / "run"
    with pytest.raises(SearchInterrupted) as info:
        search(run, toy_config(k=3, seed=1))
    assert info.value.signum == signal.SIGTERM
    assert str(info.value) == f"search stopped by SIGTERM as it ended; its results are in {run}"
    assert {"result.json", "best_cell.json"} <= {p.name for p in run.iterdir()}
    monkeypatch.undo()
    assert search(run, ev=(ev := ToyEvaluator())).trained == 0 and ev.calls == 0


def test_a_signal_while_the_workers_close_says_the_search_had_ended(tmp_path):
    """A SIGTERM while a finished search's executor closes its workers ended the process by
    the default handler, silently (status 143, no line); it is now said as a stop after the end."""

    class SignalledOnClose(InProcessExecutor):
        signalled = False

        def close(self) -> None:  # closing twice is allowed: the first close is signalled
            if not self.signalled:
                self.signalled = True
                os.kill(os.getpid(), signal.SIGTERM)  # delivered here, in the main thread
                time.sleep(0.05)  # still closing when the handler runs

    run = tmp_path / "run"
    with pytest.raises(SearchInterrupted) as info:
        search(run, toy_config(k=3, seed=1), executor=SignalledOnClose())
    assert info.value.signum == signal.SIGTERM
    assert str(info.value) == f"search stopped by SIGTERM as it ended; its results are in {run}"
    assert (run / "result.json").is_file() and not (run / LOCK).exists()
    assert search(run, ev=(ev := ToyEvaluator())).trained == 0 and ev.calls == 0


def test_a_second_signal_while_a_stopped_search_closes_its_workers_is_the_same_stop(tmp_path):
    """A SIGTERM, then another while the stopped search's executor closed its workers: the
    second ended the process by the default handler (status 143, without the resume's hint)."""

    class StoppedOnThird(ToyEvaluator):
        def evaluate(self, cell: Cell, seed: int) -> Evaluation:
            if self.calls == 2:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler runs here, in the main thread
            return super().evaluate(cell, seed)

    class SignalledOnClose(InProcessExecutor):
        closes = 0

        def close(self) -> None:
            self.closes += 1
            if self.closes == 1:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)

    class Escaped(Exception):
        """The second signal reached the handler the search had given back (by default: death)."""

    def escaped(signum: int, frame: object) -> None:
        raise Escaped

    run, executor = tmp_path / "run", SignalledOnClose()
    before = signal.signal(signal.SIGTERM, escaped)
    try:
        with pytest.raises(SearchInterrupted, match=r"2 candidates are in .*; continue with"):
            search(run, toy_config(k=3, seed=1), ev=StoppedOnThird(), executor=executor)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert executor.closes >= 1 and not (run / LOCK).exists()
    assert len(candidates(run / "journal.jsonl")) == 2


def test_a_stop_before_the_first_candidate_says_none_finished(tmp_path) -> None:
    """Ctrl-C before the first candidate finished said "0 candidates are in RUN/journal.jsonl",
    a file that was not there yet."""

    class StoppedAtOnce(ToyEvaluator):
        def evaluate(self, cell: Cell, seed: int) -> Evaluation:
            raise KeyboardInterrupt

    run = tmp_path / "run"
    with pytest.raises(SearchInterrupted) as stop:
        search(run, toy_config(k=3, seed=1), ev=StoppedAtOnce())
    assert not (run / "journal.jsonl").exists()
    assert str(stop.value).startswith(
        f"search interrupted before any candidate finished; continue with: run_search('{run}', "
    )
    assert search(run).trained > 0  # and it does continue


@pytest.mark.parametrize("name", ["result.json", "best_cell.json", "best_cell.png"])
def test_a_resume_refuses_a_folder_where_a_result_goes_before_training(tmp_path, name) -> None:
    # it trained the rest of the search first, and then failed to write there
    run = tmp_path / "run"
    search(run, toy_config(k=3, seed=1))
    journal = run / "journal.jsonl"
    journal.write_text("".join(line + "\n" for line in lines(journal)[:4]))
    for output in ("result.json", "best_cell.json", "best_cell.png"):
        (run / output).unlink()
    (run / name).mkdir()
    ev = ToyEvaluator()
    with pytest.raises(
        ConfigError, match=f"^--resume {run / name}: a folder is there, not a file$"
    ):
        search(run, ev=ev)
    assert ev.calls == 0 and len(lines(journal)) == 4 and not (run / LOCK).exists()


def test_a_resume_refuses_a_journal_it_cannot_append_to_before_training(
    tmp_path, monkeypatch
) -> None:
    """An immutable journal (``chattr +i``, which root too cannot write) was found out at the
    first record, after that candidate had trained."""
    import autoshrink.journal as journal_module

    run = tmp_path / "run"
    search(run, toy_config(k=3, seed=1))
    journal = run / "journal.jsonl"
    journal.write_text("".join(line + "\n" for line in lines(journal)[:4]))
    (run / "result.json").unlink()
    opened = journal_module.os.open

    def immutable(path, flags, *args):
        if Path(path) == journal and flags & os.O_APPEND:
            raise PermissionError(1, "Operation not permitted")
        return opened(path, flags, *args)

    monkeypatch.setattr(journal_module.os, "open", immutable)
    ev = ToyEvaluator()
    with pytest.raises(JournalError, match=f"^cannot append to {journal}: Operation not perm"):
        search(run, ev=ev)
    assert ev.calls == 0 and len(lines(journal)) == 4


def test_a_folder_turned_read_only_before_the_first_record_is_said_as_the_journal(
    tmp_path, monkeypatch
) -> None:
    """Taking back a new search's config.json failed on the read-only folder too, and that
    error ('run/config.json: Read-only file system') replaced the journal's."""
    import autoshrink.journal as journal_module

    run = tmp_path / "run"
    opened, unlink = journal_module.os.open, Path.unlink

    def read_only_open(path, flags, *args):
        if Path(path) == run / "journal.jsonl" and flags & os.O_APPEND:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return opened(path, flags, *args)

    def read_only_unlink(path, missing_ok=False):
        if path.parent == run:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return unlink(path, missing_ok)

    with monkeypatch.context() as m:
        m.setattr(journal_module.os, "open", read_only_open)
        m.setattr(Path, "unlink", read_only_unlink)
        with pytest.raises(JournalError, match=f"^cannot append to {run / 'journal.jsonl'}: Read"):
            search(run, toy_config(k=3, seed=1))
    search(run)  # what it kept is resumed
    assert len(lines(run / "journal.jsonl")) > 1


def test_a_full_disk_is_one_line_and_loses_no_record(tmp_path, monkeypatch, cli):
    import autoshrink.journal as journal_module

    real_write, calls = os.write, []
    full_from = 1  # the first record: half of it lands, then the disk is full

    def write(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) >= full_from:
            real_write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    run, cfg = tmp_path / "run", toy_config(k=4, seed=3)
    monkeypatch.setattr(journal_module.os, "write", write)
    # a new search takes back a folder without a record: its line said 'the records before are
    # intact, resume with --resume', and that resume was refused ('not a run folder')
    with pytest.raises(JournalError) as info:
        search(run, cfg)
    assert str(info.value) == (
        f"cannot append to {run / 'journal.jsonl'}: the disk is full; no record was written yet: "
        "run the same command again once it is fixed"
    )
    assert not run.exists()  # nothing to resume: the same command starts it
    calls.clear()
    full_from = 6  # the sixth record
    with pytest.raises(JournalError) as info:
        search(run, cfg)
    assert str(info.value) == (
        f"cannot append to {run / 'journal.jsonl'}: the disk is full; the records before are "
        "intact, resume with --resume once it is fixed"
    )
    kept = (run / "journal.jsonl").read_text()
    assert kept.endswith("\n") and len(kept.splitlines()) == 5  # the torn sixth is cut off
    assert not (run / LOCK).exists()
    monkeypatch.setattr(journal_module.os, "write", real_write)
    search(tmp_path / "full", cfg)
    ev = ToyEvaluator()
    search(run, ev=ev)
    assert strip_seconds(run / "journal.jsonl") == strip_seconds(
        tmp_path / "full" / "journal.jsonl"
    )


def finished_and_unstarted(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A finished toy search ``full``, its journal's lines, and ``run``: its config and
    fingerprint with no journal yet (a test writes one)."""
    full, run = tmp_path / "full", tmp_path / "run"
    search(full, toy_config(k=4, seed=3))
    run.mkdir()
    for name in ("config.json", "fingerprint.json"):
        (run / name).write_text((full / name).read_text())
    return full, run, lines(full / "journal.jsonl")


def test_repair_drops_a_torn_tail_and_a_torn_middle_stays_an_error(tmp_path):
    full, run, rows = finished_and_unstarted(tmp_path)
    torn = rows[7][:30] + "\x00\x00\n"  # a record cut short, then a newline: not a clean kill
    (run / "journal.jsonl").write_text("\n".join(rows[:7]) + "\n" + torn)
    with pytest.raises(JournalError, match="line 8 is not a JSON record .*--resume --repair"):
        search(run)
    ev = ToyEvaluator()
    resumed = search(run, ev=ev, repair=True)
    retrained = sum('"type": "candidate"' in row for row in rows[7:])
    assert ev.calls == retrained and resumed.trained == retrained
    assert (run / "journal.jsonl.torn").read_text() == torn  # nothing thrown away unseen
    assert strip_seconds(run / "journal.jsonl") == strip_seconds(full / "journal.jsonl")
    middle = rows[:3] + [rows[3][:20]] + rows[4:]
    (run / "journal.jsonl").write_text("\n".join(middle) + "\n")
    with pytest.raises(JournalError, match=r"line 4 is not a JSON record \("):
        search(run, repair=True)
    deep = rows[:3] + ["[" * 100_000 + "]" * 100_000] + rows[4:]  # past the parser's recursion
    (run / "journal.jsonl").write_text("\n".join(deep) + "\n")
    with pytest.raises(JournalError, match=r"line 4 is not a JSON record \(nested too deep\)"):
        search(run)  # not a RecursionError: the command line would print a traceback


def test_reading_a_journal_never_writes_to_it_and_a_search_tidies_it(tmp_path):
    full, run, rows = finished_and_unstarted(tmp_path)
    for tail in (rows[7][:30], rows[7]):  # a record cut mid-write; a whole one without "\n"
        data = ("\n".join(rows[:7]) + "\n" + tail).encode()
        (run / "journal.jsonl").write_bytes(data)
        kept = len(Journal(run / "journal.jsonl").records())
        assert kept == (7 if tail != rows[7] else 8)
        assert (run / "journal.jsonl").read_bytes() == data  # e.g. beside a running search
        # the resume cuts the torn record, or ends the whole one, before it appends
        search(run)
        assert strip_seconds(run / "journal.jsonl") == strip_seconds(full / "journal.jsonl")
        (run / "result.json").unlink()


def test_repair_and_retry_failed_need_resume(tmp_path):
    with pytest.raises(Exception, match=r"need resume \(--resume\)"):
        search(tmp_path / "r", toy_config(), repair=True)


def test_journal_append_is_whole_lines(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    j.append({"type": "event", "key": "a", "score": float("inf")})
    assert j.records() == [{"type": "event", "key": "a", "score": None}]


# -- item 5: out of memory retries; --retry-failed ------------------------------------------

OOM = "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"


class OutOfMemoryOnce(ToyEvaluator):
    """Each cell with ``edges`` edges runs out of memory on its first ``times`` attempts."""

    def __init__(self, edges: int, times: int = 1, error: str = OOM) -> None:
        super().__init__()
        self.edges, self.times, self.error = edges, times, error
        self.attempts: dict[str, int] = {}

    def evaluate(self, cell: Cell, seed: int) -> Evaluation:
        n = self.attempts[cell.key] = self.attempts.get(cell.key, 0) + 1
        if cell.num_edges == self.edges and n <= self.times:
            self.calls += 1
            return Evaluation(self.profile(cell), "failed", 0.0, {"error": self.error})
        return super().evaluate(cell, seed)


def test_out_of_memory_in_process_trains_the_candidate_again(tmp_path):
    from autoshrink.executors.base import InProcessExecutor

    run, ev = tmp_path / "run", OutOfMemoryOnce(edges=14)
    result = search(run, toy_config(k=3), ev, executor=InProcessExecutor())
    rows = [json.loads(x) for x in lines(run / "journal.jsonl")]
    retries = [r for r in rows if r["type"] == "event"]
    assert len(retries) == 3 and {r["attempt"] for r in retries} == {1}
    assert all(r["reason"] == OOM and r["step"] == 1 for r in retries)
    candidates = [r for r in rows if r["type"] == "candidate"]
    assert all(r["status"] == "ok" for r in candidates) and result.stopped is None
    assert set(result.cell.edges) == {(0, 2), (2, 5), (0, 4), (4, 5)}


def test_out_of_memory_retries_are_bounded_and_other_failures_not_retried(monkeypatch, caplog):
    import torch

    from autoshrink.executors.base import InProcessExecutor, Job

    emptied: list[int] = []  # the CUDA cache is emptied before each retry (torch uses CUDA)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    start = Cell.complete("cnn", ("input", "sep3x3", "conv1x1", "sep3x3"))
    jobs = [Job(start, 1), Job(start.remove_edge((0, 1)), 2)]
    told: list[tuple[int, int, str]] = []
    ev = OutOfMemoryOnce(edges=6, times=5)  # the start cell (6 edges) runs out 5 times
    with caplog.at_level("WARNING", logger="autoshrink"):
        out = dict(InProcessExecutor(max_retries=2).run(ev, jobs, lambda *a: told.append(a)))
    assert out[0].status == "failed" and ev.attempts[start.key] == 3
    assert out[0].detail == {"error": OOM, "attempts": 3}  # as a dead worker's candidate says
    assert out[1].status == "ok" and told == [(0, 1, OOM), (0, 2, OOM)]
    assert len(emptied) == 2
    assert f"candidate {start.key}: {OOM}; giving up after 2 retries" in caplog.messages
    assert f"candidate {start.key}: {OOM}; retry 2 of 2" in caplog.messages
    other = OutOfMemoryOnce(edges=6, error="RuntimeError: shape mismatch")
    out = dict(InProcessExecutor().run(other, jobs))
    assert out[0].status == "failed" and other.attempts[start.key] == 1


def test_the_batched_executor_retries_a_candidate_that_ran_out_of_memory_alone():
    from autoshrink.executors.base import Job
    from autoshrink.executors.batched import BatchedExecutor

    class Many(OutOfMemoryOnce):
        def evaluate_many(self, genotypes, seeds):
            return [self.evaluate(g, s) for g, s in zip(genotypes, seeds, strict=True)]

    start = Cell.complete("cnn", ("input", "sep3x3", "conv1x1", "sep3x3"))
    ev = Many(edges=6)
    out = dict(BatchedExecutor().run(ev, [Job(start, 1)]))
    assert out[0].status == "ok" and ev.attempts[start.key] == 2


def test_retry_failed_trains_the_failed_candidates_again_and_the_search_goes_on(tmp_path):
    run = tmp_path / "run"
    stopped = search(run, toy_config(k=3), FailingStep(edges=14))
    assert stopped.stopped is not None
    ev = ToyEvaluator()
    assert search(run, ev=ev).stopped == stopped.stopped and ev.calls == 0  # replayed as is
    resumed = search(run, ev=ev, retry_failed=True)
    assert resumed.stopped is None and set(resumed.cell.edges) == {(0, 2), (2, 5), (0, 4), (4, 5)}
    full = search(tmp_path / "full", toy_config(k=3))
    assert ev.calls == full.trained - 1  # all but the start cell
    rows = candidates(run / "journal.jsonl")
    last = {r["key"]: r for r in rows}  # a retrained record comes after its failed one
    full_rows = candidates(tmp_path / "full" / "journal.jsonl")
    assert {k: r["score"] for k, r in last.items()} == {r["key"]: r["score"] for r in full_rows}
    assert resumed.best.score == full.best.score
    again = ToyEvaluator()
    assert search(run, ev=again).trained == 0 and again.calls == 0  # the journal replays
    from autoshrink.report.reading import read_run

    read = read_run(run)  # the report counts a retrained candidate once, by its last record
    assert len(read.candidates) == len(last) == len(rows) - 3
    assert all(c.status == "ok" for c in read.candidates)


def test_a_resume_removes_the_temporary_files_of_a_killed_writer(tmp_path, ended_pid) -> None:
    # a SIGKILL while the results were written left .best_cell.png.PID.tmp for good
    import os

    run = tmp_path / "run"
    search(run, toy_config(k=3, seed=1))
    dead = run / f".best_cell.png.{ended_pid}.tmp"  # that process has ended
    ours = run / f".table.json.{os.getpid()}.tmp"  # a live writer's: kept
    dead.write_bytes(b"half a png")
    ours.write_text("{")
    odd = run / ".a.99999999999999999999.tmp"  # no pid at all: os.kill overflowed
    odd.write_text("")
    (run / "oneshot").mkdir()  # a one-shot search's weights, written beside the journal
    weights = run / "oneshot" / dead.name.replace("best_cell.png", "current.safetensors")
    weights.write_bytes(b"half the weights")
    assert search(run).trained == 0
    assert not dead.exists() and ours.exists() and not odd.exists() and not weights.exists()


@pytest.mark.parametrize("damage", [b"\x93\x00garbage", b"[]", b'{"best": null}', b'{"best": {'])
def test_a_damaged_result_is_written_again_from_the_journal(tmp_path, caplog, damage) -> None:
    """A resume kept a garbage result.json "as it was" (it only looked whether one existed)."""
    run = tmp_path / "run"
    search(run, toy_config(k=3, seed=1))
    whole = json.loads((run / "result.json").read_text())
    (run / "result.json").write_bytes(damage)
    with caplog.at_level(logging.WARNING):
        again = search(run, ev=(ev := ToyEvaluator()))
    assert again.trained == 0 and ev.calls == 0  # nothing trained: the journal has it all
    assert "it is written again from the journal" in caplog.text
    rewritten = json.loads((run / "result.json").read_text())
    assert rewritten["best"] == whole["best"] and rewritten["evaluations"] == whole["evaluations"]


def test_a_journal_line_of_an_unknown_type_or_a_bare_nan_is_refused(tmp_path) -> None:
    from autoshrink.journal import check_record, parse_record

    with pytest.raises(JournalError, match="unknown record type 'bogus'"):
        check_record(tmp_path / "journal.jsonl", 3, {"type": "bogus"})
    for constant in ("NaN", "Infinity", "-Infinity"):  # not JSON; the journal writes null
        with pytest.raises(ValueError):
            parse_record(f'{{"score": {constant}}}')
    with pytest.raises(ValueError, match="the key 'step' appears twice"):  # the last won
        parse_record('{"step": 1, "step": 2}')


def test_the_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog) -> None:
    from autoshrink.processes import process_running

    dead = next(pid for pid in range(4_000_000, 4_100_000) if not process_running(pid))
    (tmp_path / LOCK).write_text(f"{dead}\n")
    with caplog.at_level(logging.WARNING, logger="autoshrink.journal"), RunLock(tmp_path):
        assert (tmp_path / LOCK).read_text() == f"{os.getpid()}\n"
    assert f"taking over the lock of process {dead} (dead)" in caplog.text


def test_a_lock_whose_pid_cannot_be_written_is_not_held(tmp_path, monkeypatch) -> None:
    # a full disk: the lock would look held by nobody; it is an OSError naming run.lock
    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "pwrite", full)
        with pytest.raises(OSError, match="run.lock"), RunLock(tmp_path):
            pass
        assert not (tmp_path / LOCK).exists()  # an empty run.lock was left behind
        new = tmp_path / "new" / "run"
        with pytest.raises(OSError, match="run.lock"), held_folder(new):
            pass
        assert not (tmp_path / "new").exists()  # the folders made for the lock went too
    with RunLock(tmp_path):  # nothing kept it: the next search takes it
        pass
