"""The AutoShrink strategy and the search driver: known optimum, determinism, journal, resume."""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from autoshrink.config import SearchConfig
from autoshrink.errors import ConfigError, JournalError
from autoshrink.evaluators.base import Evaluation
from autoshrink.graph import Cell
from autoshrink.objectives import Score
from autoshrink.presets import preset
from autoshrink.report.folder import write_report
from autoshrink.search import run_search
from autoshrink.strategies.autoshrink import AutoShrink
from autoshrink.strategies.base import Observation

GOOD = {(0, 2), (2, 5), (0, 4), (4, 5)}


class ToyEvaluator:
    """score = (good edges kept) - 0.1 * edges under Score.cnn(): the optimum is exactly GOOD."""

    def __init__(self, diverge: frozenset[tuple[int, int]] | None = None) -> None:
        self.diverge = diverge
        self.calls = 0

    def profile(self, cell: Cell) -> dict[str, float]:
        return {"macs": 10.0 ** (6 + cell.num_edges), "params": float(cell.num_edges)}

    def evaluate(self, cell: Cell, seed: int) -> Evaluation:
        self.calls += 1
        metrics = self.profile(cell)
        if self.diverge is not None and set(cell.edges) == set(self.diverge):
            return Evaluation({**metrics, "accuracy": math.nan}, "diverged")
        metrics["accuracy"] = float(len(GOOD & set(cell.edges)))
        return Evaluation(metrics, "ok", 0.0)


def toy_config(**kw) -> SearchConfig:
    settings = dict(nodes=6, k=15, keep_fraction=0.0, seed=0, score=Score.cnn())
    return SearchConfig(**{**settings, **kw})


def strip_seconds(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        r.pop("seconds", None)  # reuse records have none
    return rows


def candidates(journal: Path) -> list[dict]:
    """The journal's candidate records (not its reuse, stage or event records)."""
    rows = [json.loads(line) for line in journal.read_text().splitlines()]
    return [r for r in rows if r.get("type", "candidate") == "candidate"]


def test_autoshrink_finds_the_known_best_cell(tmp_path):
    result = run_search(
        tmp_path / "run", toy_config(), evaluator_factory=lambda c: ToyEvaluator(), progress=False
    )
    assert set(result.cell.edges) == GOOD
    assert result.best.score == pytest.approx(4 - 0.4)
    assert result.start is not None and result.best.score > result.start.score
    saved = Cell.load(tmp_path / "run" / "best_cell.json")
    assert saved == result.cell
    out = json.loads((tmp_path / "run" / "result.json").read_text())
    assert out["best"]["edges"] == 4 and out["evaluations"] == result.evaluations


def test_shrinking_stops_at_keep_fraction_and_never_revisits_edges(tmp_path):
    result = run_search(
        tmp_path / "run",
        toy_config(k=3, keep_fraction=0.5),
        evaluator_factory=lambda c: ToyEvaluator(),
        progress=False,
    )
    rows = candidates(tmp_path / "run" / "journal.jsonl")
    by_step: dict[int, list[dict]] = {}
    for r in rows:
        by_step.setdefault(r["step"], []).append(r)
    assert len(by_step[0]) == 1 and by_step[0][0]["edges"] == 15
    assert all(len(v) <= 3 for s, v in by_step.items() if s > 0)
    # the cell each step keeps: best score, ties to fewer edges (the toy's scores are finite)
    chosen = [
        {tuple(e) for e in max(v, key=lambda r: (r["score"], -r["edges"]))["cell"]["edges"]}
        for _, v in sorted(by_step.items())
    ]
    for s, (parent, child) in enumerate(zip(chosen, chosen[1:], strict=False)):
        assert child < parent  # a chain of strict subsets: a removed edge never comes back
        for r in by_step[s + 1]:  # and every candidate of the next step is a removal from it
            assert {tuple(e) for e in r["cell"]["edges"]} < parent
    assert min(r["edges"] for r in rows) >= round(15 * 0.5) - 3  # a removal can prune several
    reused = len((tmp_path / "run" / "journal.jsonl").read_text().splitlines()) - len(rows)
    assert result.evaluations == len(rows) + reused  # re-proposed cells are not retrained


def test_a_diverged_candidate_scores_minus_inf_and_never_wins(tmp_path):
    ev = ToyEvaluator(diverge=frozenset(GOOD))
    result = run_search(
        tmp_path / "run", toy_config(), evaluator_factory=lambda c: ev, progress=False
    )
    assert set(result.cell.edges) != GOOD
    rows = candidates(tmp_path / "run" / "journal.jsonl")
    diverged = [r for r in rows if r["status"] == "diverged"]
    assert diverged and all(r["score"] is None for r in diverged)


def step_1_told(scores: tuple[float, float, float]) -> tuple[AutoShrink, list]:
    """AutoShrink over the complete 3-node cell, K = 3, its start scored 0.5 and its step 1
    (three removals) told ``scores``; with step 1's proposals."""
    start = Cell.complete("cnn", ("input", "sep3x3", "conv1x1"))
    strat = AutoShrink(start, k=3, keep_fraction=0.0, rng=random.Random(0))
    (p0,) = strat.ask()
    strat.tell([Observation(p0, 0.5)])
    props = strat.ask()
    strat.tell([Observation(p, s) for p, s in zip(props, scores, strict=True)])
    return strat, props


def test_strategy_ties_go_to_fewer_edges():
    strat, props = step_1_told((1.0, 1.0, 1.0))
    # the removals leave 2, 2 and 1 edges (cutting 0->1 prunes 1->2): the tie goes to the 1
    assert sorted(p.genotype.num_edges for p in props) == [1, 2, 2]
    assert strat.best is not None and strat.best.proposal.genotype.edges == ((0, 2),)
    assert strat.current.edges == ((0, 2),)


def test_patience_waits_for_a_better_score_not_a_tie_with_fewer_edges():
    # every step's tie with fewer edges reset the patience: a search of ties never stopped
    start = Cell.complete("cnn", ("input", *["sep3x3"] * 5))  # 15 edges
    strat = AutoShrink(start, k=3, keep_fraction=0.0, rng=random.Random(0), patience=2)
    while props := strat.ask():
        strat.tell([Observation(p, 1.0) for p in props])
    assert strat.step == 3 and strat.end_reason is not None and "patience" in strat.end_reason
    assert strat.best is not None and strat.best.proposal.step == 2  # the tie's fewer edges


def test_a_nan_score_is_never_the_step_winner():
    # compared as a tuple it won whenever it came first; Observation.ok calls it failed
    strat, props = step_1_told((math.nan, 0.9, 0.7))
    assert strat.best is not None and strat.best.score == 0.9
    assert strat.current == props[1].genotype


def test_a_start_cell_at_its_edge_target_is_scored_and_not_shrunk():
    start = Cell.complete("cnn", ("input", "sep3x3", "conv1x1"))  # 3 edges; target round(2.7)
    strat = AutoShrink(start, k=2, keep_fraction=0.9, rng=random.Random(0))
    assert not strat.finished and strat.describe() == "step 0 (3 edges)"
    (p0,) = strat.ask()  # step 0 scores the start cell, whatever its size
    assert p0.genotype == start
    strat.tell([Observation(p0, 1.0)])
    assert strat.end_reason == "reached the edge target: 3 edges, at most 3 wanted"
    assert strat.ask() == []
    # without scoring the start there is no step 0: over before a removal below the target
    unscored = AutoShrink(start, k=2, keep_fraction=0.9, rng=random.Random(0), score_start=False)
    assert unscored.finished and unscored.ask() == []


def _space_by_keys(cell: Cell) -> list[tuple[tuple[int, int], tuple]]:
    """The shrink space as first defined: every removal, the first of each key."""
    seen: set[str] = set()
    space = []
    for edge in cell.edges:
        cand = cell.remove_edge(edge)
        if cand.key not in seen:
            seen.add(cand.key)
            space.append((edge, cand.edges))
    return space


def test_the_shrink_space_is_the_first_removal_of_each_key_whatever_the_symmetry(monkeypatch):
    """Pins that hashing only the removals of a shared signature keeps the shrink space (so a
    seed draws the same candidates, and a journal resumes): cells of one op (many isomorphic
    removals), of two, of five, complete and shrunk at random."""
    rng = random.Random(4)
    ops = ["sep3x3", "conv1x1", "conv3x3", "maxpool3x3", "identity"]
    for nodes, vocab in [(5, 1), (7, 1), (8, 2), (9, 5), (12, 1), (12, 2), (16, 5)]:
        cell = Cell.complete("cnn", ["input"] + [rng.choice(ops[:vocab]) for _ in range(nodes - 1)])
        for _ in range(3):
            strat = AutoShrink(cell, k=3, keep_fraction=0.1, rng=random.Random(0))
            space = [(edge, cand.edges) for edge, cand in strat.shrink_space()]
            assert space == _space_by_keys(cell), (nodes, vocab, cell)
            for _ in range(2):
                cell = cell.remove_edge(rng.choice(cell.edges)) if cell.edges else cell
    # removals of distinct signatures are kept without a key: none is hashed
    from autoshrink import graph

    distinct = Cell.complete("cnn", ["input", "sep3x3", "conv1x1", "conv3x3", "identity"])
    hashed: list[str] = []
    monkeypatch.setattr(graph, "_h", lambda text: hashed.append(text) or "0" * 64)
    strat = AutoShrink(distinct, k=3, keep_fraction=0.1, rng=random.Random(0))
    assert len(strat.shrink_space()) == distinct.num_edges and hashed == []


def test_cells_of_different_signatures_have_different_keys():
    rng = random.Random(9)
    ops = ["sep3x3", "conv1x1"]
    cells = []
    for _ in range(400):
        n = rng.randint(2, 7)
        edges = [(i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < 0.5]
        cells.append(Cell.pruned("cnn", ["input"] + [rng.choice(ops) for _ in range(n - 1)], edges))
    by_key: dict[str, set] = {}
    for cell in cells:
        by_key.setdefault(cell.key, set()).add(cell.signature)
    assert all(len(signatures) == 1 for signatures in by_key.values())  # one key, one signature
    assert len(by_key) > 100


def test_autoshrink_refuses_a_generator_that_is_no_random_random():
    start = Cell.complete("cnn", ("input", "sep3x3", "conv1x1"))
    with pytest.raises(ConfigError, match=r"^rng must be a random.Random \(seeded\), got 0$"):
        AutoShrink(start, k=2, keep_fraction=0.1, rng=0)  # type: ignore[arg-type]


def test_the_edge_target_ends_a_search_in_words():
    start = Cell.complete("cnn", ("input", "sep3x3", "conv1x1"))
    strat = AutoShrink(start, k=3, keep_fraction=0.4, rng=random.Random(0))  # target 1 edge
    (p0,) = strat.ask()
    strat.tell([Observation(p0, 1.0)])
    assert strat.describe() == "step 1 (3 edges)"
    strat.tell([Observation(p, 1.0) for p in strat.ask()])  # the tie goes to the 1-edge cell
    assert strat.end_reason == "reached the edge target: 1 edge, at most 1 wanted"


def test_same_seed_same_journal_and_patience_stop(tmp_path):
    cfg = toy_config(k=2, patience=2, seed=7)
    a = run_search(tmp_path / "a", cfg, evaluator_factory=lambda c: ToyEvaluator(), progress=False)
    run_search(tmp_path / "b", cfg, evaluator_factory=lambda c: ToyEvaluator(), progress=False)
    # the patience stop the name promises (it was not checked): before the edge target of 0
    assert a.ended == "patience: 2 steps without a better score"
    assert strip_seconds(tmp_path / "a" / "journal.jsonl") == strip_seconds(
        tmp_path / "b" / "journal.jsonl"
    )


@pytest.mark.parametrize(
    ("settings", "ended"),
    [
        ({"patience": 1, "k": 1, "seed": 7}, r"patience: 1 step without a better score"),
        ({"keep_fraction": 0.5}, r"reached the edge target: \d edges, at most 8 wanted"),
        ({"strategy": "rea", "budget": 12, "k": 4}, r"the budget of 12 candidates is spent"),
        ({"strategy": "random", "budget": 9, "k": 4}, r"the budget of 9 candidates is spent"),
        ({"strategy": "random", "budget": 1, "k": 1}, r"the budget of 1 candidate is spent"),
    ],
)
def test_a_search_says_why_it_ended(tmp_path, settings, ended) -> None:
    run = tmp_path / "run"
    result = run_search(
        run, toy_config(**settings), evaluator_factory=lambda c: ToyEvaluator(), progress=False
    )
    assert re.fullmatch(ended, result.ended or "") and result.stopped is None
    assert json.loads((run / "result.json").read_text())["ended"] == result.ended


def test_resume_replays_the_journal_without_re_evaluating(tmp_path):
    cfg = toy_config(k=4, seed=3)
    full = run_search(
        tmp_path / "full", cfg, evaluator_factory=lambda c: ToyEvaluator(), progress=False
    )
    lines = (tmp_path / "full" / "journal.jsonl").read_text().splitlines()
    part = tmp_path / "part"
    part.mkdir()
    (part / "config.json").write_text((tmp_path / "full" / "config.json").read_text())
    # keep 9 whole records and a torn tenth, as a kill mid-write would leave it
    (part / "journal.jsonl").write_text("\n".join(lines[:9]) + "\n" + lines[9][:25])
    ev = ToyEvaluator()
    resumed = run_search(part, resume=True, evaluator_factory=lambda c: ev, progress=False)
    assert ev.calls == sum('"type": "candidate"' in line for line in lines[9:])
    assert resumed.cell == full.cell
    assert strip_seconds(part / "journal.jsonl") == strip_seconds(
        tmp_path / "full" / "journal.jsonl"
    )


def test_a_journal_of_early_versions_without_record_types_is_replayed(tmp_path) -> None:
    # its candidate records were checked as candidates and then ignored: all retrained before
    cfg = toy_config(k=4, seed=3)
    full = run_search(
        tmp_path / "full", cfg, evaluator_factory=lambda c: ToyEvaluator(), progress=False
    )
    records = candidates(tmp_path / "full" / "journal.jsonl")
    part = tmp_path / "part"
    part.mkdir()
    (part / "config.json").write_text((tmp_path / "full" / "config.json").read_text())
    untyped = [{k: v for k, v in r.items() if k != "type"} for r in records[:6]]
    (part / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in untyped))
    ev = ToyEvaluator()
    resumed = run_search(part, resume=True, evaluator_factory=lambda c: ev, progress=False)
    assert ev.calls == len(records) - 6 and resumed.cell == full.cell
    assert resumed.evaluations == full.evaluations


def test_run_folder_errors(tmp_path):
    with pytest.raises(JournalError, match="nothing to resume"):
        run_search(tmp_path / "nope", resume=True, evaluator_factory=lambda c: ToyEvaluator())
    run_search(
        tmp_path / "r", toy_config(k=2), evaluator_factory=lambda c: ToyEvaluator(), progress=False
    )
    with pytest.raises(JournalError, match="already holds a search"):
        run_search(tmp_path / "r", toy_config(), evaluator_factory=lambda c: ToyEvaluator())
    with (tmp_path / "r" / "journal.jsonl").open("r+") as f:
        f.write("garbage\n")
    with pytest.raises(JournalError, match="line 1 is not a JSON record"):
        run_search(tmp_path / "r", resume=True, evaluator_factory=lambda c: ToyEvaluator())


def test_a_new_search_keeps_out_of_folders_with_other_files(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"mine": true}')  # a user's own config.json
    with pytest.raises(JournalError, match="already holds a search"):
        run_search(mine, toy_config(), evaluator_factory=lambda c: ToyEvaluator())
    (mine / "config.json").unlink()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=r"holds other files \(notes.txt\)"):
        run_search(mine, toy_config(), evaluator_factory=lambda c: ToyEvaluator())
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    (mine / "notes.txt").unlink()
    (mine / "table.json").write_text("{}")  # an input of the search may wait in its folder
    with pytest.raises(ConfigError, match="holds other files"):
        run_search(mine, toy_config(), evaluator_factory=lambda c: ToyEvaluator())
    config = replace(toy_config(), latency_table=str(mine / "table.json"))
    run_search(mine, config, evaluator_factory=lambda c: ToyEvaluator(), progress=False)
    assert (mine / "table.json").read_text() == "{}" and (mine / "journal.jsonl").is_file()


def test_hard_constraints_reject_before_training(tmp_path):
    ev = ToyEvaluator()
    run_search(
        tmp_path / "r",
        toy_config(k=3, constraints={"macs": 10.0 ** (6 + 12)}),
        evaluator_factory=lambda c: ev,
        progress=False,
    )
    rows = candidates(tmp_path / "r" / "journal.jsonl")
    rejected = [r for r in rows if r["status"] == "rejected"]
    assert rejected and all(r["edges"] > 12 and "macs" in r["detail"]["reason"] for r in rejected)
    assert ev.calls == len(rows) - len(rejected)


def test_patience_counts_from_the_first_cell_that_meets_the_constraints(tmp_path):
    """The first steps cannot meet a tight --max-macs: every candidate is rejected, and that
    must not use up the patience before the search reaches cells that meet it."""
    result = run_search(
        tmp_path / "r",
        toy_config(k=3, patience=1, constraints={"macs": 10.0 ** (6 + 8)}),
        evaluator_factory=lambda c: ToyEvaluator(),
        progress=False,
    )
    assert result.start is not None and result.start.status == "rejected"
    assert result.best.proposal.genotype.num_edges <= 8 and result.best.ok


TINY = [
    "--preset", "demo", "--nodes", "5", "--k", "3", "--keep-fraction", "0.3",
    "--per-class", "20", "--val-size", "60", "--epochs", "2", "--width", "0.25",
    "--executor", "inprocess", "--no-progress",
]  # fmt: skip


def autoshrink_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "autoshrink", *args]


@pytest.mark.slow
def test_kill_9_mid_search_then_resume_matches_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        autoshrink_cmd("search", *TINY, "--out", str(tmp_path / "full")),
        check=True,
        env=env,
        capture_output=True,
    )
    full = (tmp_path / "full" / "journal.jsonl").read_text().splitlines()
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        autoshrink_cmd("search", *TINY, "--out", str(run)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    journal = run / "journal.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if journal.exists() and len(journal.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = len(journal.read_text().splitlines())
    whole = journal.read_text().split("\n")[:-1]  # a torn last line is dropped on resume
    trained_before = sum('"type": "candidate"' in line for line in whole)
    assert 4 <= before < len(full), "the kill must land mid-search"
    done = subprocess.run(
        autoshrink_cmd("search", "--resume", str(run), "--executor", "inprocess", "--no-progress"),
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((run / "result.json").read_text())
    assert (
        result["trained_this_session"]
        == len(  # finished ones not retrained
            candidates(tmp_path / "full" / "journal.jsonl")
        )
        - trained_before
    )
    assert Cell.load(run / "best_cell.json") == Cell.load(tmp_path / "full" / "best_cell.json")
    assert strip_seconds(journal) == strip_seconds(tmp_path / "full" / "journal.jsonl")
    keys = [r["key"] for r in candidates(journal)]
    assert len(keys) == len(set(keys))  # nothing trained twice


def test_presets_and_config_round_trip(tmp_path):
    cfg = preset("demo", k=3, training_epochs=2)
    assert cfg.k == 3 and cfg.training.epochs == 2 and cfg.dataset == "digits"
    cfg.save(tmp_path / "c.json")
    assert SearchConfig.load(tmp_path / "c.json") == cfg
    cfg.save(str(tmp_path / "s.json"))  # a path as a string, as the docs' snippets write it
    assert SearchConfig.load(str(tmp_path / "s.json")) == cfg
    paper = preset("paper")
    assert (paper.nodes, paper.k, paper.per_class, paper.val_size) == (8, 10, 500, 1000)
    assert (paper.training.epochs, paper.training.lr, paper.training.batch_size) == (20, 4e-3, 128)
    # the rest of method sections 2-4: shrink to round(28 * 0.01) = 0 edges; weight decay
    # 1e-5; stop after 5 epochs without a better accuracy, below 0.2 after epoch 3, or a
    # validation loss > 3 x the training loss; score acc - 0.1 (log10(MACs) - 6); ReLU cells
    assert (paper.keep_fraction, paper.task, paper.dataset, paper.strategy) == (
        0.01, "cnn", "cifar10", "autoshrink",
    )  # fmt: skip
    t = paper.training
    assert (t.weight_decay, t.patience, t.min_accuracy, t.min_accuracy_epoch, t.overfit_ratio) == (
        1e-5, 5, 0.2, 3, 3.0,
    )  # fmt: skip
    assert paper.score == Score(metric="accuracy", slope=1.0, offset=0.0, cost="macs", weight=0.1)
    assert paper.activation == "relu"


def test_a_complete_cell_rejected_by_a_constraint_is_reported(cli, tmp_path):
    # the complete 5-node cell has 53,536 MACs on this proxy; cells under 45,000 come later
    code, out, err = cli("search", *TINY, "--max-macs", "45000", "--out", tmp_path / "r")
    assert code == 0, err
    assert "complete cell rejected: no score" in out and "best score" in out
    page = write_report(tmp_path / "r").read_text()  # as the step table's dash says
    assert "step 0: 10 edges, rejected: no score" in page and "score -inf" not in page
    # --json prints result.json alone on stdout (a resume of the ended run: nothing trained)
    args = ("search", "--resume", tmp_path / "r", "--json", "--report")
    code, out, err = cli(*args)
    assert code == 0 and json.loads(out) == json.loads((tmp_path / "r" / "result.json").read_text())
    assert "report: " in err
    code, out, err = cli("search", *TINY, "--max-macs", "1", "--out", tmp_path / "none")
    assert code == 2 and err.strip().endswith(
        "no candidate finished with a finite score; every candidate broke a hard constraint "
        "(macs 53536 > max 1): loosen it, and search into another folder"
    )


def test_the_journal_holds_the_cost_a_constraint_was_checked_on(tmp_path) -> None:
    # a pool worker measured the latency again: "ok" records and the best cell broke the limit
    class RemeasuredLatency(ToyEvaluator):
        def profile(self, cell: Cell) -> dict[str, float]:
            return {**super().profile(cell), "latency_ms": 0.5 + 0.01 * cell.num_edges}

        def evaluate(self, cell: Cell, seed: int) -> Evaluation:
            e = super().evaluate(cell, seed)
            refined = e.metrics["params"] + 0.5  # an estimate of the profile, refined
            return replace(e, metrics={**e.metrics, "latency_ms": 9.0, "params": refined})

    config = toy_config(k=3, constraints={"latency_ms": 1.0})
    result = run_search(tmp_path / "r", config, evaluator_factory=lambda c: RemeasuredLatency(),
                        progress=False)  # fmt: skip
    ok = [r for r in candidates(tmp_path / "r" / "journal.jsonl") if r["status"] == "ok"]
    assert ok and all(r["metrics"]["latency_ms"] < 1.0 for r in ok)
    # only the bounded metric: an evaluation may refine another estimate of its profile
    assert all(r["metrics"]["params"] == r["edges"] + 0.5 for r in ok)
    assert result.best.metrics["latency_ms"] < 1.0
    # without a constraint nothing was checked: the evaluation's own measurement is kept
    free = toy_config(k=3)
    result = run_search(tmp_path / "free", free, evaluator_factory=lambda c: RemeasuredLatency(),
                        progress=False)  # fmt: skip
    assert result.best.metrics["latency_ms"] == 9.0

    class Staged(RemeasuredLatency):  # progressive screening's stages keep the checked value too
        num_classes = 10

        def screening_stage(self, classes, epochs):
            return self

    from autoshrink.screening import ScreeningStage

    stages = (ScreeningStage(5, 1, 0.34),)
    staged = replace(config, screening="progressive", screening_stages=stages)
    run_search(tmp_path / "s", staged, evaluator_factory=lambda c: Staged(), progress=False)
    rows = [json.loads(x) for x in (tmp_path / "s" / "journal.jsonl").read_text().splitlines()]
    staged_rows = [r for r in rows if r["type"] == "stage" and r["status"] == "ok"]
    assert staged_rows and all(r["metrics"]["latency_ms"] < 1.0 for r in staged_rows)


def test_a_new_search_refused_before_its_first_candidate_leaves_the_folder_free(tmp_path):
    def refuses(config):
        raise ConfigError("screening stage names 11 classes; the data set has 10")

    run = tmp_path / "r"
    with pytest.raises(ConfigError, match="11 classes"):
        run_search(run, toy_config(k=2), evaluator_factory=refuses, progress=False)
    assert not run.exists()  # no config.json that would claim the folder, nor the folder
    run.mkdir()
    with pytest.raises(ConfigError, match="11 classes"):  # a folder of the user's stays
        run_search(run, toy_config(k=2), evaluator_factory=refuses, progress=False)
    assert list(run.iterdir()) == []
    result = run_search(
        run, toy_config(k=2), evaluator_factory=lambda c: ToyEvaluator(), progress=False
    )
    assert result.evaluations > 0


def test_settings_a_search_cannot_use_are_refused_when_made() -> None:
    # each was accepted: k=2.5 failed mid-search (and its saved config then refused to load),
    # a misspelt constraint bounded nothing, and task="RNN" gave a CNN preset
    for settings, needle in [
        ({"k": 2.5}, 'config: "k" must be an integer, got 2.5'),
        ({"seed": "a"}, 'config: "seed" must be an integer, got "a"'),
        # a library call names its argument, the flag in brackets (said "for --task cnn")
        ({"constraints": {"mac": 1e4}}, "unknown constraint 'mac' for task 'cnn' (--task cnn)"),
        ({"task": "RNN"}, "unknown task 'RNN'"),
        # a misspelt data set failed only when the search loaded it; an rnn search reads
        # PTB-layout text, so an image set's name would only mislabel its reports
        ({"dataset": "mnist"}, "unknown data set 'mnist' for task 'cnn' (--task cnn); expected"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(needle)):
            preset("demo", **settings)
    assert preset("demo", constraints={"params": 1e4}).constraints == {"params": 1e4}
    with pytest.raises(ConfigError, match=r"shrinks the 3-node rnn cell to 0 edges, .* 0\.333"):
        preset("demo", task="rnn", nodes=3, keep_fraction=0.0)  # it ended "every ... failed"
    assert preset("demo", task="rnn", nodes=3, keep_fraction=0.333).keep_fraction == 0.333
    hint = r"; start from preset\(name, task='rnn'\)$"
    with pytest.raises(
        ConfigError, match=r"'digits' for task 'rnn' \(--task rnn\); .*'ptb'\]" + hint
    ):
        preset("demo", task="rnn", dataset="digits")
    with pytest.raises(ConfigError, match=r"\(--task cnn\); expected one of \[[^]]*\]$"):
        preset("demo", dataset="mnist")  # a cnn preset is what it started from: no hint
    # an rnn config made without a preset holds the field's default (and saved it): it loads
    rnn = json.loads(json.dumps(preset("demo", task="rnn").to_dict())) | {"dataset": "cifar10"}
    assert SearchConfig.from_dict(rnn).dataset == "cifar10"
    from autoshrink.training.proxy_settings import OodSettings

    with pytest.raises(ConfigError, match="ood needs objective ood"):  # saved, never read
        preset("demo", ood=OodSettings(synthetic_mix=0.3))
    assert (
        preset("demo", objective="ood", ood=OodSettings(synthetic_mix=0.3)).ood.synthetic_mix == 0.3
    )


def test_a_resume_refuses_another_config_and_a_numpy_metric_is_journalled(tmp_path) -> None:
    import numpy as np

    class NumpyMetrics(ToyEvaluator):
        def evaluate(self, cell, seed):
            e = super().evaluate(cell, seed)
            return replace(e, metrics={k: np.float32(v) for k, v in e.metrics.items()})

    run = tmp_path / "r"  # a NumPy scalar failed the journal write, and kept the folder
    first = run_search(run, toy_config(k=2), evaluator_factory=lambda c: NumpyMetrics(),
                       progress=False)  # fmt: skip
    with pytest.raises(ConfigError, match=r"config given differs \(k: 2 -> 3; pass config=None"):
        run_search(run, toy_config(k=3), resume=True, progress=False,
                   evaluator_factory=lambda c: ToyEvaluator())  # fmt: skip
    again = run_search(run, toy_config(k=2), resume=True, progress=False,
                       evaluator_factory=lambda c: ToyEvaluator())  # fmt: skip
    assert again.trained == 0 and again.best.score == first.best.score


def test_a_start_that_fails_with_any_error_leaves_the_folder_free(tmp_path) -> None:
    def breaks(config):
        raise TypeError("an evaluator factory's own bug")

    run = tmp_path / "r"
    with pytest.raises(TypeError):
        run_search(run, toy_config(k=2), evaluator_factory=breaks, progress=False)
    assert not run.exists()
    deep = tmp_path / "new" / "deeper" / "r"  # the folders made above it went on standing
    with pytest.raises(TypeError):
        run_search(deep, toy_config(k=2), evaluator_factory=breaks, progress=False)
    assert not (tmp_path / "new").exists()


def make_toy_evaluator(config: SearchConfig) -> ToyEvaluator:
    return ToyEvaluator()


def test_a_run_scored_by_a_custom_evaluator_resumes_only_with_one(tmp_path, caplog) -> None:
    run = tmp_path / "r"
    first = run_search(run, toy_config(k=2), evaluator_factory=make_toy_evaluator, progress=False)
    saved = json.loads((run / "fingerprint.json").read_text())
    assert saved["evaluator"] == f"{__name__}.make_toy_evaluator"
    before = (run / "journal.jsonl").read_bytes()
    with pytest.raises(ConfigError, match=r"custom evaluator \S*test_search\.make_toy_evaluator;"):
        run_search(run, resume=True, progress=False)  # the built-in one would mix its scores in
    assert (run / "journal.jsonl").read_bytes() == before
    again = run_search(run, resume=True, progress=False, evaluator_factory=lambda c: ToyEvaluator())
    assert again.trained == 0 and again.best.score == first.best.score
    assert "make_toy_evaluator; " in caplog.text  # another one: a warning


def test_a_config_given_to_a_resume_brings_its_execution_settings(tmp_path) -> None:
    run, seen = tmp_path / "r", []

    def factory(config: SearchConfig) -> ToyEvaluator:
        seen.append(config.threads)
        return ToyEvaluator()

    run_search(run, toy_config(k=2, threads=2), evaluator_factory=factory, progress=False)
    run_search(run, toy_config(k=2, threads=1), resume=True, evaluator_factory=factory,
               progress=False)  # fmt: skip
    run_search(run, resume=True, evaluator_factory=factory, progress=False)
    assert seen == [2, 1, 2]  # config.json keeps the run's own


def test_a_resume_of_an_ended_search_keeps_its_result_and_needs_its_journal(tmp_path) -> None:
    run, factory = tmp_path / "r", make_toy_evaluator
    run_search(run, toy_config(k=2), evaluator_factory=factory, progress=False)
    before = (run / "result.json").read_bytes()
    again = run_search(run, resume=True, evaluator_factory=factory, progress=False)
    assert again.trained == 0 and (run / "result.json").read_bytes() == before
    (run / "journal.jsonl").write_bytes(b"")
    with pytest.raises(JournalError, match=r"result\.json says the search ended, but journal"):
        run_search(run, resume=True, evaluator_factory=factory, progress=False)


def test_a_resume_of_an_ended_search_writes_its_deleted_best_cell_again(tmp_path) -> None:
    """``--resume`` of a finished run kept its results as they were, even a deleted
    ``best_cell.json`` (and picture): the resume said the search ended, and left it gone."""
    run, factory = tmp_path / "r", make_toy_evaluator
    run_search(run, toy_config(k=2), evaluator_factory=factory, progress=False)
    cell, result = (run / "best_cell.json").read_bytes(), (run / "result.json").read_bytes()
    (run / "best_cell.json").unlink()
    (run / "best_cell.png").unlink()
    again = run_search(run, resume=True, evaluator_factory=factory, progress=False)
    assert again.trained == 0 and (run / "result.json").read_bytes() == result
    assert (run / "best_cell.json").read_bytes() == cell
    best = json.loads(result)["best"]["cell"]
    assert Cell.load(run / "best_cell.json") == Cell.from_dict(best)
    assert (run / "best_cell.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("damage", ["truncated", "another cell", "reformatted"])
def test_a_resume_of_an_ended_search_writes_its_damaged_best_cell_again(tmp_path, damage) -> None:
    """A ``best_cell.json`` cut short or edited to another cell was kept by ``--resume`` of
    an ended search (only a deleted one was written again); one that holds the journal's best
    cell, however laid out, is the user's and stays as it is."""
    run, factory = tmp_path / "r", make_toy_evaluator
    run_search(run, toy_config(k=2), evaluator_factory=factory, progress=False)
    path, result = run / "best_cell.json", (run / "result.json").read_bytes()
    best = Cell.from_dict(json.loads(result)["best"]["cell"])
    other = Cell("cnn", ("input", "conv1x1", "sep3x3"), ((0, 1), (1, 2)))
    assert other != best
    text = {
        "truncated": path.read_text()[:20],
        "another cell": other.to_json(),
        "reformatted": best.to_json(),
    }[damage]
    path.write_text(text)
    again = run_search(run, resume=True, evaluator_factory=factory, progress=False)
    assert again.trained == 0 and (run / "result.json").read_bytes() == result
    assert Cell.load(path) == best
    if damage == "reformatted":
        assert path.read_text() == text


def test_the_proxy_network_is_found_through_the_evaluators_wrappers() -> None:
    from autoshrink.evaluators.base import proxy_network
    from autoshrink.evaluators.factory import build_evaluator
    from autoshrink.spaces.macros import cifar_proxy

    demo = cifar_proxy(in_channels=1, image_size=8, num_classes=10, width=0.5)  # digits, 8x8
    for config in (
        preset("demo"),
        preset("demo", evaluator="oneshot"),  # wraps the proxy evaluator
        preset("demo", constraints={"latency_ms": 10.0}),  # wrapped with a latency cost
    ):
        assert proxy_network(build_evaluator(config)) == demo
    assert proxy_network(object()) is None  # a custom evaluator: no network to name


def test_steps_whose_candidates_all_tie_on_accuracy_are_named(tmp_path, caplog) -> None:
    class Flat(ToyEvaluator):  # every cell learns the same: only its MACs rank it
        def evaluate(self, cell, seed):
            e = super().evaluate(cell, seed)
            return replace(e, metrics={**e.metrics, "accuracy": 0.1})

    with caplog.at_level("WARNING", logger="autoshrink"):
        run_search(tmp_path / "flat", toy_config(k=3, keep_fraction=0.7),
                   evaluator_factory=lambda c: Flat(), progress=False)  # fmt: skip
    tied = r"5 step\(s\) had every scored candidate at one accuracy \(step 1: 0\.1\), so cost"
    assert re.search(tied + r" alone ranked them.*\(steps 1, 2, 3, 4, 5\)", caplog.text)

    class Distinct(ToyEvaluator):  # every cell its own accuracy
        def evaluate(self, cell, seed):
            e = super().evaluate(cell, seed)
            acc = sum((i + 1) * (j + 3) ** 2 for i, j in cell.edges) / 1e4
            return replace(e, metrics={**e.metrics, "accuracy": acc})

    caplog.clear()
    with caplog.at_level("WARNING", logger="autoshrink"):
        run_search(tmp_path / "distinct", toy_config(k=3, keep_fraction=0.7),
                   evaluator_factory=lambda c: Distinct(), progress=False)  # fmt: skip
    assert "cost alone" not in caplog.text


def test_a_candidate_record_and_the_end_of_a_search_without_a_score() -> None:
    from autoshrink.search_records import all_rejected, record
    from autoshrink.strategies.base import Proposal

    cell = Cell.complete("cnn", ("input", "sep3x3", "conv1x1"))
    rec = record(Proposal(cell, 2), 1, 7, Evaluation({"accuracy": 0.5}, seconds=1.234567), 0.5)
    assert (rec["step"], rec["index"], rec["seed"], rec["edges"]) == (2, 1, 7, 3)
    assert rec["seconds"] == 1.2346  # to the 0.1 ms
    # the removed edge is a field of its own; other notes of the strategy go under "meta"
    removal = record(Proposal(cell, 2, {"removed_edge": (0, 2)}), 1, 7, Evaluation({}), 0.5)
    assert removal["removed_edge"] == (0, 2) and "meta" not in removal
    noted = record(Proposal(cell, 2, {"removed_edge": None, "origin": "mutation"}), 1, 7,
                   Evaluation({}), 0.5)  # fmt: skip
    assert noted["meta"] == {"origin": "mutation"}
    # the error of a search without a finite score blames constraints only when they rejected all
    failed = [{"status": "failed", "detail": {"error": "x"}}]
    rejected = [{"status": "rejected", "detail": {"reason": "macs 9 > 5"}}]
    assert all_rejected(failed) == "" and all_rejected(failed + rejected) == ""
    said = (
        "; every candidate broke a hard constraint (macs 9 > 5): loosen it, and search into "
        "another folder"
    )
    assert all_rejected(rejected) == said
